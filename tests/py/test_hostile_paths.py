"""Careless and hostile paths for `qshard run` and `qshard export` (issue 15,
items 2 and 12).

- --out equal to --model, inside it, or containing it; --work inside the
  model; --out equal to --work: exit 2 before anything is written, and every
  model file byte-identical afterwards (before: the model was overwritten and
  the run exited 0). The same for `qshard export --out` (gptq into the model
  dir, gguf/hdf5 files inside it, over the work dir's checkpoints).
- --out / --work naming an existing regular file: exit 2 (before: 1).
- -np 3 on a 2-block model: exit 2, and neither --out nor --work created
  (before: a fingerprint and an empty out dir were left).
- a read-only work dir: exit 2 at set-up, before block 1 is computed (the run
  drops root with setpriv when it runs as root, for whom modes are no bar).
- a newline in --out: every journal line is still one event.
- `qshard run .`: "is a directory, not a job file"; --formats "": exit 2.
Each failure is exactly one stderr line.
"""
import hashlib
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402
import hostile  # noqa: E402

np = qstest.need("numpy")
tmp = qstest.tmpdir("qs-hostile-paths-")
os.chmod(tmp, 0o755)
model, calib = os.path.join(tmp, "model"), os.path.join(tmp, "calib.npy")
hostile.synth(model)
hostile.tokens(calib)


def digest(d):
    out = {}
    for base, _, files in os.walk(d):
        for f in files:
            p = os.path.join(base, f)
            out[os.path.relpath(p, d)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


MODEL0 = digest(model)


def refused(args, *words, mpi=0, **kw):
    p = qstest.mpirun(mpi, args, expect=None, **kw) if mpi else qstest.run(args, expect=None, **kw)
    qstest.check(p.returncode == 2, f"{args}: exit {p.returncode}, expected 2:\n{p.stderr}")
    line = hostile.one_error_line(p, *words)
    qstest.check(digest(model) == MODEL0, f"{args}: the model dir changed")
    return line


# ---- outputs over the model ----------------------------------------------------------
cases = [
    ("--out = --model", model, os.path.join(tmp, "w1"), "is the model directory"),
    ("--out inside the model", os.path.join(model, "q"), os.path.join(tmp, "w2"), "is inside the model directory"),
    ("--out contains the model", tmp, os.path.join(tmp, "w3"), "contains the model directory"),
    ("--out = --model via a symlink", os.path.join(tmp, "link"), os.path.join(tmp, "w4"), "is the model directory"),
    ("--work inside the model", os.path.join(tmp, "o5"), os.path.join(model, "w"), "--work"),
    ("--out = --work", os.path.join(tmp, "same"), os.path.join(tmp, "same"), "the same directory"),
]
os.symlink(model, os.path.join(tmp, "link"))
for what, out, work, words in cases:
    line = refused(hostile.run_args(model, calib, work, out), words)
    qstest.check(not os.path.exists(work), f"{what}: --work {work} was created")
    print(f"{what}: {line}")

# a finished run, then `qshard export` aimed at the model or the work dir
work, out = os.path.join(tmp, "work"), os.path.join(tmp, "out")
qstest.run(hostile.run_args(model, calib, work, out))
blocks0 = digest(os.path.join(work, "blocks"))
for fmt, dest, words in (("gptq", model, "the model directory"), ("gguf", os.path.join(model, "x.gguf"), "model"),
                         ("hdf5", os.path.join(model, "config.json"), "model"),
                         ("hdf5", os.path.join(work, "blocks", "block_00000.h5"), "checkpoints"),
                         ("gptq", os.path.join(work, "blocks"), "checkpoints")):
    line = refused(["export", "--work", work, "--format", fmt, "--out", dest], words)
    qstest.check(digest(os.path.join(work, "blocks")) == blocks0, "export changed the checkpoints")
print(f"export over the model or the checkpoints: {line}")

# ---- regular files where directories go ------------------------------------------------
afile = os.path.join(tmp, "afile")
open(afile, "w").write("x")
for flag in ("--out", "--work"):
    args = hostile.run_args(model, calib, os.path.join(tmp, "wf"), os.path.join(tmp, "of"))
    args[args.index(flag) + 1] = afile
    line = refused(args, afile)
    print(f"{flag} naming a regular file: {line}")
args = hostile.run_args(model, calib, os.path.join(afile, "w"), os.path.join(tmp, "of2"))
refused(args, afile)

# ---- too many ranks: nothing created ----------------------------------------------------
w, o = os.path.join(tmp, "w-np3"), os.path.join(tmp, "o-np3")
p = qstest.mpirun(3, hostile.run_args(model, calib, w, o), expect=None)
qstest.check(p.returncode == 2 and "3 ranks for a model of 2 blocks" in p.stderr, f"-np 3: {p.returncode} {p.stderr}")
qstest.check(not os.path.exists(w) and not os.path.exists(o), "-np 3 left --work or --out behind")
print("-np 3 on 2 blocks: exit 2, nothing created")

# ---- a read-only work dir: refused at set-up, nothing computed ---------------------------
w, o = os.path.join(tmp, "w-ro"), os.path.join(tmp, "o-ro")
os.makedirs(w)
os.chmod(w, 0o555)
pre = []
if os.geteuid() == 0:
    if not shutil.which("setpriv"):
        qstest.skip("running as root without setpriv: cannot make a directory read-only for the run")
    pre = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    os.chmod(tmp, 0o777)  # the unprivileged run writes --out here
    for base, dirs, files in os.walk(model):
        for x in dirs + files:
            os.chmod(os.path.join(base, x), 0o755)
env = dict(os.environ, HOME=tmp, TMPDIR=tmp)
p = subprocess.run(pre + [qstest.qshard()] + hostile.run_args(model, calib, w, o), capture_output=True, text=True,
                   env=env)
qstest.check(p.returncode == 2, f"read-only work dir: exit {p.returncode}:\n{p.stderr}")
line = hostile.one_error_line(p, w, "Permission denied")
qstest.check(not os.path.exists(os.path.join(w, "blocks", "block_00000.h5")) and "quantized" not in p.stderr,
             "a block was computed before the read-only work dir was noticed")
print(f"read-only work dir: {line}")
os.chmod(tmp, 0o755)

# ---- a newline in --out: the journal keeps one event per line -----------------------------
w, o = os.path.join(tmp, "w-nl"), os.path.join(tmp, "o\nnl")
qstest.run(hostile.run_args(model, calib, w, o))
lines = open(os.path.join(w, "journal.log")).read().splitlines()
qstest.check(all(x[:4].isdigit() and x[10] == "T" for x in lines), f"a journal line is not an event: {lines}")
qstest.check(any("o?nl" in x for x in lines), f"the path is not in the journal: {lines}")
print(f"newline in --out: {len(lines)} journal lines, each an event")

# ---- small ones ------------------------------------------------------------------------
cwd_line = refused(["run", "."], "is a directory, not a job file")
line = refused(hostile.run_args(model, calib, os.path.join(tmp, "w-f"), os.path.join(tmp, "o-f")) + ["--formats", ""],
               "--formats", "names no format")
qstest.check(not os.path.exists(os.path.join(tmp, "o-f")), "--formats '' created --out")
print(f"qshard run .: {cwd_line}\n--formats '': {line}")
print("ok")
