"""`qshard inspect` on the shared TinyStories-656K checkpoint: llama, 2 blocks,
7 linears per block, 656,000 parameters; the bf16 file, its f32 upcast and a
2-shard copy made with the PyPI safetensors library all describe the same
model. Expected numbers come from the shared README and from our own NumPy
parse of the files, not from qshard."""
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402

np = qstest.need("numpy")
qstest.need("safetensors")
from safetensors import TensorSpec, serialize  # noqa: E402

model = qstest.shared("models", "tinystories-656K")


def inspect(*args):
    return json.loads(qstest.run(["inspect", *args, "--json"]).stdout)


def header(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    h = json.loads(raw[8:8 + n])
    h.pop("__metadata__", None)
    return h, raw[8 + n:]


LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
SHAPES = {"self_attn.q_proj": [128, 128], "self_attn.k_proj": [64, 128], "self_attn.v_proj": [64, 128],
          "self_attn.o_proj": [128, 128], "mlp.gate_proj": [384, 128], "mlp.up_proj": [384, 128],
          "mlp.down_proj": [128, 384]}


def check_model(j, dtype, esize, label):
    qstest.check(j["architecture"] == "llama" and j["n_blocks"] == 2, f"{label}: {j['architecture']} {j['n_blocks']}")
    qstest.check(j["total_params"] == 656000, f"{label}: total_params {j['total_params']}")
    qstest.check(j["total_bytes"] == 656000 * esize, f"{label}: total_bytes {j['total_bytes']}")
    qstest.check(j["n_tensors"] == 20, f"{label}: n_tensors {j['n_tensors']}")
    for b, blk in enumerate(j["blocks"]):
        names = [l["name"] for l in blk["linears"]]
        qstest.check(names == LINEARS, f"{label}: block {b} linears {names}")
        for l in blk["linears"]:
            qstest.check(l["shape"] == SHAPES[l["name"]] and l["dtype"] == dtype, f"{label}: {l}")
            qstest.check(l["tensor"] == f"model.layers.{b}.{l['name']}.weight", f"{label}: {l['tensor']}")
        qstest.check(blk["params"] == 196864, f"{label}: block {b} params {blk['params']}")
        qstest.check(blk["bytes"] == 196864 * esize and blk["n_tensors"] == 9, f"{label}: block {b} {blk}")
    other = {t["name"]: t for t in j["other_tensors"]}
    qstest.check(len(other) == 2 and "model.norm.weight" in other, f"{label}: other tensors {list(other)}")


bf = inspect(model)
check_model(bf, "BF16", 2, "bf16")
qstest.check(bf["files"] == [{"name": "model.safetensors", "bytes": 1314128, "tensors": 20}], f"files {bf['files']}")
qstest.check("model.embed_tokens.weight" in {t["name"] for t in bf["other_tensors"]}, "bf16 embedding")
f32 = inspect(model, "--file", "model.f32.safetensors", "--check")
check_model(f32, "F32", 4, "f32")
qstest.check("lm_head.weight" in {t["name"] for t in f32["other_tensors"]}, "f32 stores the tied matrix as lm_head")
qstest.check(f32["checked_tensors"] == 20, f"checked {f32.get('checked_tensors')}")

text = qstest.run(["inspect", model]).stdout
for want in ["llama", "2 blocks", "7 linears", "656,000 parameters", "1,312,000 bytes"]:
    qstest.check(want in text, f"text output lacks {want!r}:\n{text}")

# The bf16 tensors split into 2 shards (written by the Python library) + an index.
h, data = header(os.path.join(model, "model.safetensors"))
tmp = qstest.tmpdir("qs-io-inspect-")
names = sorted(h)
keep = []
wm = {}
for i, part in enumerate((names[::2], names[1::2])):
    specs = {}
    for k in part:
        b0, b1 = h[k]["data_offsets"]
        a = np.frombuffer(data[b0:b1], dtype=np.uint16).copy()
        keep.append(a)
        specs[k] = TensorSpec(dtype="bfloat16", shape=h[k]["shape"], data_ptr=a.ctypes.data, data_len=a.nbytes)
    fn = f"model-{i + 1:05d}-of-00002.safetensors"
    with open(os.path.join(tmp, fn), "wb") as f:
        f.write(bytes(serialize(specs, metadata={"format": "pt"})))
    wm.update({k: fn for k in part})
with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": 1312000}, "weight_map": wm}, f)
with open(os.path.join(model, "config.json")) as src, open(os.path.join(tmp, "config.json"), "w") as dst:
    dst.write(src.read())
sh = inspect(tmp, "--check")
check_model(sh, "BF16", 2, "sharded")
qstest.check([f["name"] for f in sh["files"]] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"],
             f"shard files {sh['files']}")
qstest.check(sh["blocks"] == bf["blocks"] and sh["other_tensors"] == bf["other_tensors"], "sharded differs from single")

qstest.run(["inspect", "--help"])
qstest.run(["inspect", model, "--bogus"], expect=2)
print("ok")
