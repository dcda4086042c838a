"""`qshard submit --dry-run` with a --work of thousands of path components
(issue 15, item 3). The work dir is made absolute and canonical with no
fixed-size table of components (before: 2048 components wrote past
`char *parts[2048]` — a stack overflow ASan reports; labelled unit, so the CI
runs this against the ASan + UBSan build). The script's WORK is the path
with "." and ".." applied; an absolute path too long for the options is exit 2.
"""
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402
import hostile  # noqa: E402

tmp = qstest.tmpdir("qs-submit-long-")
job = os.path.join(tmp, "job.ini")
open(job, "w").write("[model]\nmodel = m\n[calibration]\ncalib = c.npy\n[output]\nout = o\n")


def script_work(stdout):
    for line in stdout.splitlines():
        if line.startswith("WORK="):
            return shlex.split(line.split("#")[0][len("WORK="):])[0]
    raise AssertionError("no WORK= line in the script")


# 2047 components of "a" (4093 bytes, just under the 4096 an option holds),
# relative to a cwd that adds more: over 2048 components in all, and an
# absolute path longer than an option can hold — one line, exit 2
rel = "/".join(["a"] * 2047)
p = qstest.run(["submit", job, "--dry-run", "--work", rel], cwd=tmp, expect=2)
hostile.one_error_line(p, "--work", "too long")
# "." and ".." in the part that does not exist yet: 1600 components, 400 left
mixed = "/".join(["a", ".", "b", ".."] * 400)
p = qstest.run(["submit", job, "--dry-run", "--work", mixed], cwd=tmp)
qstest.check(script_work(p.stdout) == os.path.join(os.path.realpath(tmp), "/".join(["a"] * 400)),
             f"WORK with . and ..: {script_work(p.stdout)[:80]}...")
# ".." above the root stays at the root
p = qstest.run(["submit", job, "--dry-run", "--work", "/" + "../" * 1300 + "w"], cwd=tmp)
qstest.check(script_work(p.stdout) == "/w", f"WORK: {script_work(p.stdout)}")
# the longest that fits
rel = "/".join(["a"] * ((4095 - len(os.path.realpath(tmp)) - 1) // 2))
p = qstest.run(["submit", job, "--dry-run", "--work", rel], cwd=tmp)
qstest.check(script_work(p.stdout) == os.path.join(os.path.realpath(tmp), rel), "the longest --work")
print("2049-component, 1600-component and 1300-.. --work: exit 2 or WORK canonical, no overflow")
print("ok")
