"""The README's results table is what scripts/results.sh measures.

Runs the script (about a minute: six 2-rank runs and seven evals of tinystories-656K) and
compares its table, line by line, with the one between the README's markers. When it
fails, the README is stale: `scripts/results.sh --update-readme` rewrites the table.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402

qstest.shared("models", "tinystories-656K")
qstest.shared("text", "tinystories_valid_head.txt")
src = os.environ.get("QS_SOURCE_DIR", ".")
p = subprocess.run([os.path.join(src, "scripts", "results.sh")], capture_output=True, text=True, timeout=1200,
                   env=dict(os.environ, QSHARD=qstest.qshard()))
if p.returncode == 77:
    qstest.skip(p.stderr.strip())
qstest.check(p.returncode == 0, f"scripts/results.sh failed ({p.returncode}):\n{p.stderr}")
measured = [l for l in p.stdout.splitlines() if l.startswith("|")]
readme = open(os.path.join(src, "README.md"), encoding="utf-8").read()
begin, end = "<!-- results: scripts/results.sh -->\n", "<!-- /results -->"
qstest.check(begin in readme and end in readme, "README.md has no results markers")
table = readme[readme.index(begin) + len(begin):readme.index(end)].splitlines()
qstest.check(len(measured) == 9, f"the script printed {len(measured)} table lines:\n{p.stdout}")
for want, got in zip(measured, table):
    qstest.check(want == got, f"README.md is stale (scripts/results.sh --update-readme):\n  measured {want}\n  README   {got}")
qstest.check(len(table) == len(measured), f"README has {len(table)} table lines, the script {len(measured)}")
print("\n".join(measured))
print("ok")
