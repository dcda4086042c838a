"""Hostile block checkpoints through the binary (issue 15, item 1).

A finished run's checkpoint of block 1 is rewritten with h5py — g_idx out of
range or negative, 30 bits, a code of 255 at 4 bits, an infinite scale —
with a valid xxHash (tests/py/hostile.py computes it from the specification
and first checks it against the one qshard stored). Then:
- `qshard export` (gptq, gguf, hdf5) exits 2 with one stderr line naming the
  checkpoint file and the field;
- running the same `qshard run` again (g_idx cases) treats the file as
  corrupt: a warning naming the field, block 1 recomputed, and the export
  byte-identical to the untouched run's.
Labelled unit: the CI runs it against the ASan + UBSan build too (before the
checks, export and resume read out of bounds or crashed).
"""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402
import hostile  # noqa: E402

np = qstest.need("numpy")
qstest.need("h5py")

tmp = qstest.tmpdir("qs-hostile-ckpt-")
model, calib = os.path.join(tmp, "model"), os.path.join(tmp, "calib.npy")
hostile.synth(model)
hostile.tokens(calib)
work0, out0 = os.path.join(tmp, "work0"), os.path.join(tmp, "out0")
qstest.run(hostile.run_args(model, calib, work0, out0))
shards = [f for f in hostile.files_of(out0) if f.endswith(".safetensors")]


def set_g_idx(v):
    def edit(f):
        g = f["linear0/g_idx"][()]
        g[5] = v
        f["linear0/g_idx"][...] = g
    return edit


def set_bits(f):
    f["linear2"].attrs.modify("bits", np.int32(30))


def set_code(f):
    c = f["linear4/codes"][()]
    c[0, 17] = 255
    f["linear4/codes"][...] = c


def set_scale(f):
    s = f["linear1/scales"][()]
    s[0, 2] = np.inf
    f["linear1/scales"][...] = s


CASES = [
    ("g_idx 99", set_g_idx(99), "field 'g_idx'[5] = 99"),
    ("g_idx -1", set_g_idx(-1), "field 'g_idx'[5] = -1"),
    ("30 bits", set_bits, "field 'bits' = 30"),
    ("code 255 at 4 bits", set_code, "field 'codes'[0, 17] = 255"),
    ("infinite scale", set_scale, "field 'scales' of row 2 (group 0) = inf"),
]

for k, (what, edit, field) in enumerate(CASES):
    work = os.path.join(tmp, f"work{k + 1}")
    shutil.copytree(work0, work)
    ckpt = os.path.join(work, "blocks", "block_00001.h5")
    hostile.forge(ckpt, edit)
    for fmt, out in (("gptq", os.path.join(tmp, f"x{k}")), ("gguf", os.path.join(tmp, f"x{k}.gguf")),
                     ("hdf5", os.path.join(tmp, f"x{k}.h5"))):
        p = qstest.run(["export", "--work", work, "--format", fmt, "--out", out], expect=2)
        hostile.one_error_line(p, ckpt, field)
        qstest.check(not os.path.exists(out) or fmt == "gptq", f"{fmt}: {out} was written")
        qstest.check(not os.path.exists(os.path.join(out, "model.safetensors.index.json")), "an index was written")
    # resume: a warning, the block recomputed, the same export as the untouched run
    # (two cases: each is a whole run, slow under ASan)
    if k >= 2:
        print(f"{what}: export exit 2 naming the field")
        continue
    out = os.path.join(tmp, f"out{k + 1}")
    p = qstest.run(hostile.run_args(model, calib, work, out))
    qstest.check("warning" in p.stderr and field in p.stderr and "recomputing block 1" in p.stderr,
                 f"{what}: no warning naming the field on resume:\n{p.stderr}")
    hostile.same_files(out0, out, shards + ["model.safetensors.index.json"])
    qstest.check(f"checkpoint invalid ({ckpt}: linear" in open(os.path.join(work, "journal.log")).read(),
                 "the journal does not record the invalid checkpoint")
    print(f"{what}: export exit 2 naming the field; resume recomputed block 1, identical export")
print("ok")
