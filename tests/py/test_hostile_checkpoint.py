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
The same for OmniQuant's record in the checkpoint (its folded FP tensors
replace the model's norms in the exports and in a resumed block): a NaN or a
wrong length in a folded tensor, a tensor of another block, a non-finite
learned parameter or loss, a record in a GPTQ run, and dimensions of 2^40
elements (refused before anything is allocated). Before: NaN norms went
into the export with exit 0, a wrong length was exit 1 ("folded tensor of
N elements"), and a resume applied them.
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
# ---- OmniQuant's record ---------------------------------------------------------------------
omni_args = ["--method", "omniquant", "--epochs", "1", "--let"]
work_o, out_o = os.path.join(tmp, "work-omni"), os.path.join(tmp, "out-omni")
qstest.run(hostile.run_args(model, calib, work_o, out_o, *omni_args))
NORM = "model.layers.1.input_layernorm.weight"


def fp_nan(f):
    d = f[f"omniquant/fp/{NORM}"]
    v = d[()]
    v[3] = np.nan
    d[...] = v


def fp_short(f):
    v = f[f"omniquant/fp/{NORM}"][()]
    del f[f"omniquant/fp/{NORM}"]
    f.create_dataset(f"omniquant/fp/{NORM}", data=v[:32])


def fp_foreign(f):
    f.move(f"omniquant/fp/{NORM}", "omniquant/fp/model.layers.0.input_layernorm.weight")


def param_inf(f):
    d = f["omniquant/params/let.attn_scale"]
    v = d[()]
    v[0] = np.inf
    d[...] = v


def loss_nan(f):
    f["omniquant/loss"][...] = np.nan


def fp_huge(f):
    # 2^40 elements declared, nothing stored (chunked, fill value): the
    # reader must refuse the size before it allocates (no checksum needed:
    # the read fails first)
    del f[f"omniquant/fp/{NORM}"]
    f.create_dataset(f"omniquant/fp/{NORM}", shape=(1 << 40,), dtype=np.float32, chunks=(1024,))


OMNI_CASES = [
    ("folded NaN", fp_nan, f"field 'fp/{NORM}'[3] = nan", True),
    ("folded too short", fp_short, f"field 'fp/{NORM}' has 32 elements, the model's has 64", True),
    ("folded tensor of block 0", fp_foreign, "is none of block 1's norms or linear biases", True),
    ("infinite LET scale", param_inf, "field 'params/let.attn_scale' holds a non-finite value", True),
    ("NaN loss curve", loss_nan, "field 'loss'[0] = nan", True),
    ("2^40-element folded tensor", fp_huge, "the omniquant group is unreadable", False),
]
omni_shards = [f for f in hostile.files_of(out_o) if f.endswith(".safetensors")]
for k, (what, edit, field, forge) in enumerate(OMNI_CASES):
    work = os.path.join(tmp, f"work-omni{k}")
    shutil.copytree(work_o, work)
    ckpt = os.path.join(work, "blocks", "block_00001.h5")
    if forge:
        hostile.forge(ckpt, edit)
    else:
        h5py = qstest.need("h5py")
        with h5py.File(ckpt, "r+") as f:
            edit(f)
    for fmt, out in (("gptq", os.path.join(tmp, f"xo{k}")), ("gguf", os.path.join(tmp, f"xo{k}.gguf")),
                     ("hdf5", os.path.join(tmp, f"xo{k}.h5"))):
        p = qstest.run(["export", "--work", work, "--format", fmt, "--out", out], expect=2)
        hostile.one_error_line(p, ckpt, field)
        qstest.check(not os.path.exists(out) or fmt == "gptq", f"{fmt}: {out} was written")
    if k == 0:
        # resume: the record is a corrupt checkpoint like any other
        out = os.path.join(tmp, f"out-omni{k}")
        p = qstest.run(hostile.run_args(model, calib, work, out, *omni_args))
        qstest.check("warning" in p.stderr and field in p.stderr and "recomputing block 1" in p.stderr,
                     f"{what}: no warning naming the field on resume:\n{p.stderr}")
        hostile.same_files(out_o, out, omni_shards + ["model.safetensors.index.json"])
        print(f"omniquant {what}: export exit 2 naming the field; resume recomputed block 1, identical export")
    else:
        print(f"omniquant {what}: export exit 2 naming the field")

# a GPTQ run's checkpoint with an OmniQuant record (with a valid checksum)
work = os.path.join(tmp, "work-gptq-omni")
shutil.copytree(work0, work)
ckpt = os.path.join(work, "blocks", "block_00001.h5")
src = os.path.join(work_o, "blocks", "block_00001.h5")


def add_record(f):
    h5py = qstest.need("h5py")
    with h5py.File(src, "r") as g:
        g.copy("omniquant", f)


hostile.forge(ckpt, add_record)
p = qstest.run(["export", "--work", work, "--format", "gptq", "--out", os.path.join(tmp, "xg")], expect=2)
hostile.one_error_line(p, ckpt, "an 'omniquant' group, but this run does not quantize with OmniQuant")
print("a GPTQ checkpoint with an OmniQuant record: export exit 2")
print("ok")
