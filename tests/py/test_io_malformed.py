"""Malformed checkpoints through `qshard inspect` (and `inspect --check`):
each must fail with exit code 2 and exactly one stderr line that names the
offending file and the problem — no crash, no leak (this test also runs in the
ASan build via the "unit" label).

The good model is written with the PyPI safetensors library; every bad file is
a hand-made variation of it.
"""
import json
import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402

np = qstest.need("numpy")
qstest.need("safetensors")
import safetensors.numpy as stnp  # noqa: E402

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8, "intermediate_size": 16,
    "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 2, "vocab_size": 32,
    "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": True,
    "hidden_act": "silu", "torch_dtype": "float32",
}


def tiny_tensors():
    rng = np.random.default_rng(1)
    t = {"model.embed_tokens.weight": (32, 8), "model.norm.weight": (8,)}
    for L in range(2):
        p = f"model.layers.{L}."
        t.update({p + "input_layernorm.weight": (8,), p + "post_attention_layernorm.weight": (8,),
                  p + "self_attn.q_proj.weight": (8, 8), p + "self_attn.k_proj.weight": (4, 8),
                  p + "self_attn.v_proj.weight": (4, 8), p + "self_attn.o_proj.weight": (8, 8),
                  p + "mlp.gate_proj.weight": (16, 8), p + "mlp.up_proj.weight": (16, 8),
                  p + "mlp.down_proj.weight": (8, 16)})
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in t.items()}


root = qstest.tmpdir("qs-io-malformed-")
TENSORS = tiny_tensors()


def new_model(name, tensors=TENSORS, config=CONFIG):
    d = os.path.join(root, name)
    os.makedirs(d)
    if config is not None:
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config, f)
    if tensors is not None:
        stnp.save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    return d


def read(d, name="model.safetensors"):
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


def write(d, data, name="model.safetensors"):
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def split(b):
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]


def join(header, data, raw_header=None):
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


def with_header(d, edit):
    """Rewrites model.safetensors with edit(header) applied (data region kept)."""
    header, data = split(read(d))
    edit(header)
    write(d, join(header, data))


def expect_fail(d, file_name, needles, check=False):
    args = ["inspect", d] + (["--check"] if check else [])
    p = qstest.run(args, expect=2)
    lines = p.stderr.splitlines()
    qstest.check(len(lines) == 1, f"{d}: expected exactly one stderr line, got {p.stderr!r}")
    line = lines[0]
    qstest.check(file_name in line, f"{d}: '{file_name}' not named in {line!r}")
    for n in needles:
        qstest.check(n in line, f"{d}: '{n}' not in {line!r}")
    qstest.check(p.stdout == "", f"{d}: stdout not empty on error: {p.stdout!r}")
    return line


Q = "model.layers.0.self_attn.q_proj.weight"
cases = 0

# The good model passes, with and without --check (the baseline for all below).
good = new_model("good")
qstest.run(["inspect", good])
qstest.run(["inspect", good, "--check"])

# 1. truncated: fewer than 8 bytes
d = new_model("truncated_header")
write(d, read(d)[:5])
expect_fail(d, "model.safetensors", ["too short"]); cases += 1

# 2. header length beyond the end of the file
d = new_model("header_past_eof")
b = read(d)
write(d, struct.pack("<Q", len(b)) + b[8:])
expect_fail(d, "model.safetensors", ["header length", "past the end of the file"]); cases += 1

# 3. header length above the bound
d = new_model("header_too_long")
write(d, struct.pack("<Q", 1 << 40) + read(d)[8:])
expect_fail(d, "model.safetensors", ["exceeds the limit"]); cases += 1

# 4. header is not JSON
d = new_model("bad_json")
header, data = split(read(d))
raw = json.dumps(header).encode()[:-7] + b"!@#$%^&"
write(d, join(None, data, raw_header=raw))
expect_fail(d, "model.safetensors", ["not valid JSON"]); cases += 1

# 5. header is JSON but not an object
d = new_model("json_not_object")
write(d, join(None, split(read(d))[1], raw_header=b'["a", 1]'))
expect_fail(d, "model.safetensors", ["expected a JSON object"]); cases += 1

# 6. unknown dtype
d = new_model("unknown_dtype")
with_header(d, lambda h: h[Q].update(dtype="F8_E9M9"))
expect_fail(d, "model.safetensors", [Q, "unknown dtype \"F8_E9M9\""]); cases += 1

# 7. shape × dtype size does not match the byte range
d = new_model("shape_mismatch")
with_header(d, lambda h: h[Q].update(shape=[8, 9]))
expect_fail(d, "model.safetensors", [Q, "shape [8,9] × F32 needs 288 bytes, data_offsets span 256"]); cases += 1

# 8. data_offsets beyond the file (the data region was cut short)
d = new_model("truncated_data")
write(d, read(d)[:-100])
expect_fail(d, "model.safetensors", ["run past the end of the data region"]); cases += 1

# 9. two tensors' ranges overlap
d = new_model("overlap")
def overlap(h):
    a, b = "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight"
    h[b]["data_offsets"] = [h[a]["data_offsets"][0] + 4, h[a]["data_offsets"][1] + 4]
with_header(d, overlap)
expect_fail(d, "model.safetensors", ["overlap"]); cases += 1

# 10. negative shape
d = new_model("negative_shape")
with_header(d, lambda h: h[Q].update(shape=[-8, -8]))
expect_fail(d, "model.safetensors", [Q, "shape[0] is negative"]); cases += 1

# 11. non-integer shape
d = new_model("fractional_shape")
with_header(d, lambda h: h[Q].update(shape=[8, 8.5]))
expect_fail(d, "model.safetensors", [Q, "shape[1] is not an integer"]); cases += 1

# 12. index names a shard that does not exist
def sharded(name):
    d = new_model(name, tensors=None)
    names = sorted(TENSORS)
    half = {k: TENSORS[k] for k in names[:10]}, {k: TENSORS[k] for k in names[10:]}
    wm = {}
    for i, part in enumerate(half):
        fn = f"model-{i + 1:05d}-of-00002.safetensors"
        stnp.save_file(part, os.path.join(d, fn), metadata={"format": "pt"})
        wm.update({k: fn for k in part})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, f)
    return d, wm


d, _ = sharded("sharded_ok")
qstest.run(["inspect", d, "--check"])
d, _ = sharded("missing_shard")
os.remove(os.path.join(d, "model-00002-of-00002.safetensors"))
expect_fail(d, "model.safetensors.index.json", ["model-00002-of-00002.safetensors", "does not exist"]); cases += 1

# 13. index names a tensor its shard does not hold
d, wm = sharded("tensor_not_in_shard")
wm["model.layers.1.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors" \
    if wm["model.layers.1.mlp.up_proj.weight"].startswith("model-00002") else "model-00002-of-00002.safetensors"
with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
    json.dump({"weight_map": wm}, f)
expect_fail(d, "model.safetensors.index.json", ["model.layers.1.mlp.up_proj.weight", "does not contain it"]); cases += 1

# 14. NaN in a weight: fine for inspect, an error with --check naming tensor and index
t = dict(TENSORS)
t[Q] = t[Q].copy()
t[Q][2, 3] = np.nan
d = new_model("nan_weight", tensors=t)
qstest.run(["inspect", d])
expect_fail(d, "model.safetensors", [Q, "element 19 (flat index) is NaN"], check=True); cases += 1

# 15. Inf in a weight
t = dict(TENSORS)
t["model.norm.weight"] = t["model.norm.weight"].copy()
t["model.norm.weight"][5] = -np.inf
d = new_model("inf_weight", tensors=t)
expect_fail(d, "model.safetensors", ["model.norm.weight", "element 5 (flat index) is Inf"], check=True); cases += 1

# 16. missing config.json
d = new_model("no_config", config=None)
expect_fail(d, "config.json", ["missing"]); cases += 1

# 17. config.json is not JSON
d = new_model("bad_config")
with open(os.path.join(d, "config.json"), "w") as f:
    f.write('{"model_type": "llama", "hidden_size": 8,,}')
expect_fail(d, "config.json", []); cases += 1

# 18. a linear the config implies is missing
t = {k: v for k, v in TENSORS.items() if k != "model.layers.1.mlp.up_proj.weight"}
d = new_model("missing_linear", tensors=t)
expect_fail(d, d, ["model.layers.1.mlp.up_proj.weight", "missing"]); cases += 1

# 19. a linear whose shape disagrees with config.json
t = dict(TENSORS)
t["model.layers.1.mlp.down_proj.weight"] = np.zeros((8, 12), np.float32)
d = new_model("wrong_linear_shape", tensors=t)
expect_fail(d, d, ["model.layers.1.mlp.down_proj.weight", "[8,12]", "[8,16]"]); cases += 1

# 20. the same tensor twice in the header
d = new_model("duplicate_name")
header, data = split(read(d))
raw = json.dumps(header, separators=(",", ":")).encode()
dup = b'"model.norm.weight":' + json.dumps(header["model.norm.weight"], separators=(",", ":")).encode()
raw = raw[:-1] + b"," + dup + b"}"
write(d, join(None, data, raw_header=raw))
expect_fail(d, "model.safetensors", ["'model.norm.weight' appears twice"]); cases += 1

# 21. empty file
d = new_model("empty_file")
write(d, b"")
expect_fail(d, "model.safetensors", ["too short"]); cases += 1

# 22. not a directory / no weights at all
d = new_model("no_weights", tensors=None)
expect_fail(d, d, ["no model.safetensors"]); cases += 1
expect_fail(os.path.join(good, "config.json"), "config.json", ["not a directory"]); cases += 1

qstest.check(cases >= 12, "too few cases")
shutil.rmtree(root)
print(f"ok: {cases} malformed inputs rejected with one line and exit code 2")
