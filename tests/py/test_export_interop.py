"""The GPTQ export read by independent readers.

A tinystories-656K run writes the GPTQ safetensors directory and the HDF5
archive. With PyPI `safetensors` and NumPy (test-only unpacking written here
from the documented layout) and h5py:
- qweight/qzeros/scales/g_idx unpack to exactly the codes/zeros/scales/g_idx
  the archive holds, and the dequantized weights agree;
- config.json's quantization_config has the fields loaders require;
- `qshard eval` on the export gives exactly the NLL of an f32 checkpoint made
  here from the archive's dequantized weights (the in-memory quantized model);
- `qshard export` from the work dir reproduces the run's files byte for byte,
  and a gptq_v2 export stores zeros without the −1.
"""
import filecmp
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402

np = qstest.need("numpy")
h5py = qstest.need("h5py")
qstest.need("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

MODEL = qstest.shared("models", "tinystories-656K")
tmp = qstest.tmpdir()
rng = np.random.default_rng(7)
calib = os.path.join(tmp, "calib.npy")
np.save(calib, rng.integers(3, 2048, size=(16, 64), dtype=np.int32))
evalset = os.path.join(tmp, "eval.npy")
np.save(evalset, rng.integers(3, 2048, size=(8, 64), dtype=np.int32))


def unpack_stream(words, bits, count):
    """b-bit values packed LSB-first as one continuous bit stream in int32 words (along axis 0)."""
    u = words.view(np.uint32).astype(np.uint64)
    out = np.zeros((count,) + words.shape[1:], dtype=np.int64)
    for k in range(count):
        pos = k * bits
        w, sh = pos // 32, pos % 32
        v = u[w] >> np.uint64(sh)
        if sh + bits > 32:
            v |= u[w + 1] << np.uint64(32 - sh)
        out[k] = (v & np.uint64((1 << bits) - 1)).astype(np.int64)
    return out


def check_export(out, archive, bits, v2):
    cfg = json.load(open(os.path.join(out, "config.json")))
    qc = cfg["quantization_config"]
    for key in ("quant_method", "bits", "group_size", "desc_act", "sym", "static_groups", "true_sequential",
                "damp_percent", "checkpoint_format", "lm_head"):
        qstest.check(key in qc, f"quantization_config lacks {key}")
    qstest.check(qc["quant_method"] == "gptq" and qc["bits"] == bits, f"quantization_config: {qc}")
    qstest.check(qc["checkpoint_format"] == ("gptq_v2" if v2 else "gptq"), "checkpoint_format")
    qstest.check(json.load(open(os.path.join(out, "quantize_config.json")))["bits"] == bits, "quantize_config.json")
    index = json.load(open(os.path.join(out, "model.safetensors.index.json")))["weight_map"]
    tensors, names = {}, set()
    for f in sorted(set(index.values())):
        with safe_open(os.path.join(out, f), framework="np") as st:
            for k in st.keys():
                names.add(k)
                qstest.check(index[k] == f, f"{k} is in {f}, the index says {index[k]}")
                if k.rsplit(".", 1)[-1] in ("qweight", "qzeros", "scales", "g_idx"):
                    tensors[k] = st.get_tensor(k)
    qstest.check(names == set(index), "the index names exactly the tensors in the shards")
    h5 = h5py.File(archive, "r")
    deq = {}
    for bname in h5["blocks"]:
        for lname, g in h5["blocks"][bname].items():
            p = lname[: -len(".weight")]
            codes, scales, zeros, gidx = g["codes"][()], g["scales"][()], g["zeros"][()], g["g_idx"][()]
            rows, cols = codes.shape
            qw, qz = tensors[p + ".qweight"], tensors[p + ".qzeros"]
            qstest.check(qw.dtype == np.int32 and qw.shape == (cols * bits // 32, rows), f"{p}.qweight {qw.shape}")
            qstest.check(tensors[p + ".scales"].dtype == np.float16, f"{p}.scales dtype")
            q = unpack_stream(qw, bits, cols)                      # [in, out]
            z = unpack_stream(qz.T, bits, rows).T + (0 if v2 else 1)  # [groups, out]
            qstest.check(np.array_equal(q.T, codes), f"{p}: unpacked qweight != archive codes")
            qstest.check(np.array_equal(z, zeros), f"{p}: unpacked qzeros != archive zeros")
            qstest.check(np.array_equal(tensors[p + ".scales"].astype(np.float32), scales), f"{p}: scales")
            qstest.check(np.array_equal(tensors[p + ".g_idx"], gidx), f"{p}: g_idx")
            s16 = tensors[p + ".scales"].astype(np.float32)
            w = (s16[gidx, :] * (q - z[gidx, :]).astype(np.float32)).T  # [out, in]
            deq[lname] = np.ascontiguousarray(w, dtype=np.float32)  # save_file writes raw memory order
            qstest.check(p + ".weight" not in names, f"{p}.weight must not remain")
    qstest.check(len(deq) == 14, f"archive holds {len(deq)} linears")
    return deq, tensors


out, work = os.path.join(tmp, "out"), os.path.join(tmp, "work")
qstest.run(["run", "--model", MODEL, "--calib", calib, "--work", work, "--out", out, "--bits", 4, "--group-size", 32,
            "--act-order", "--formats", "gptq,hdf5"])
deq, tensors = check_export(out, os.path.join(out, "qshard.h5"), 4, False)

# the in-memory quantized model as an f32 checkpoint → eval must agree exactly.
# model.f32.safetensors is an exact upcast of the bf16 weights the run read; it
# stores the tied matrix as lm_head.weight, which the tied config reads as the embedding.
fake = dict(load_file(os.path.join(MODEL, "model.f32.safetensors")))
fake["model.embed_tokens.weight"] = fake.pop("lm_head.weight")
for k, w in deq.items():
    fake[k] = w
fdir = os.path.join(tmp, "fake")
os.makedirs(fdir)
save_file(fake, os.path.join(fdir, "model.safetensors"))
for f in ("config.json", "tokenizer.json"):
    shutil.copy(os.path.join(MODEL, f), fdir)
# both in f32 compute (the export keeps bf16 embeddings: its default would be bf16)
a = json.loads(qstest.run(["eval", "--model", out, "--tokens", evalset, "--json", "--compute-dtype", "f32"]).stdout)
b = json.loads(qstest.run(["eval", "--model", fdir, "--tokens", evalset, "--json", "--compute-dtype", "f32"]).stdout)
qstest.check(a["nll"] == b["nll"], f"eval of the export {a['nll']!r} != in-memory quantized model {b['nll']!r}")
print(f"export NLL {a['nll']:.6f} == dequantized-f32 NLL {b['nll']:.6f}")

# qshard export reproduces the run's export; v2 stores zeros as they are
re = os.path.join(tmp, "re")
qstest.run(["export", "--work", work, "--format", "gptq", "--out", re])
for f in sorted(os.listdir(out)):
    if f.endswith(".safetensors") or f.endswith(".json"):
        qstest.check(filecmp.cmp(os.path.join(out, f), os.path.join(re, f), shallow=False), f"re-export {f} differs")
v2 = os.path.join(tmp, "v2")
qstest.run(["export", "--work", work, "--format", "gptq", "--out", v2, "--checkpoint-format", "gptq_v2"])
check_export(v2, os.path.join(out, "qshard.h5"), 4, True)

# 3-bit: values straddle int32 words
out3, work3 = os.path.join(tmp, "out3"), os.path.join(tmp, "work3")
qstest.run(["run", "--model", MODEL, "--calib", calib, "--work", work3, "--out", out3, "--bits", 3, "--group-size", 32,
            "--formats", "gptq,hdf5"])
check_export(out3, os.path.join(out3, "qshard.h5"), 3, False)

# the archive's attributes describe the run
h5 = h5py.File(os.path.join(out, "qshard.h5"), "r")
run = json.loads(h5.attrs["run"])
qstest.check(run["options"]["bits"] == 4 and run["options"]["act_order"] is True, "archive run attributes")
rep = json.load(open(os.path.join(work, "qshard_report.json")))
for e in rep["layers"]:
    g = h5["blocks"][f"block_{e['block']:05d}"][e["name"]]
    qstest.check(abs(g.attrs["loss"] - e["loss"]) <= 1e-12 * max(1, abs(e["loss"])), f"{e['name']}: archive loss")


# the v1 trap: v1 stores zero − 1, so a zero-point of 0 (an asymmetric group with
# no negative weight) cannot be written; the run refuses, names the tensor and
# points to gptq_v2, and the same command with gptq_v2 resumes and finishes.
model = os.path.join(tmp, "nonneg")
shutil.copytree(MODEL, model)
from safetensors.numpy import load_file as lf  # noqa: E402
w32 = lf(os.path.join(MODEL, "model.f32.safetensors"))
w32["model.embed_tokens.weight"] = w32.pop("lm_head.weight")
w32["model.layers.1.mlp.up_proj.weight"] = np.abs(w32["model.layers.1.mlp.up_proj.weight"])
os.remove(os.path.join(model, "model.safetensors"))
os.remove(os.path.join(model, "model.f32.safetensors"))
save_file(w32, os.path.join(model, "model.safetensors"))
outn, workn = os.path.join(tmp, "out-nonneg"), os.path.join(tmp, "work-nonneg")
args = ["run", "--model", model, "--calib", calib, "--work", workn, "--out", outn, "--asym", "--group-size", 32,
        "--method", "rtn"]
p = qstest.run(args, expect=None)
qstest.check(p.returncode == 2 and "up_proj" in p.stderr and "gptq_v2" in p.stderr,
             f"v1 with a zero-point of 0 must be refused, naming the tensor and gptq_v2: {p.returncode} {p.stderr}")
qstest.check(not os.path.exists(os.path.join(outn, "model.safetensors.index.json")), "no index after the refusal")
p = qstest.run(args + ["--checkpoint-format", "gptq_v2"])
qstest.check("resumed" in open(os.path.join(workn, "journal.log")).read(), "the v2 run resumed the finished blocks")
qz = None
with safe_open(os.path.join(outn, json.load(open(os.path.join(outn, "model.safetensors.index.json")))["weight_map"][
        "model.layers.1.mlp.up_proj.qzeros"]), framework="np") as st:
    qz = st.get_tensor("model.layers.1.mlp.up_proj.qzeros")
qstest.check((unpack_stream(qz.T, 4, 384) == 0).any(), "gptq_v2 stores the zero-points of 0 as they are")
print("v1 trap: refused with a pointer to gptq_v2; v2 resumed and stored zero-points of 0")
print("ok")
