"""safetensors interop: our writer is byte-identical to the PyPI `safetensors`
library, and our reader reads what the library (and the shared real model)
wrote, checked against NumPy and an independent header parse.

io_tool (tests/unit/io_tool.c) exposes our reader (st-dump) and our writer
(st-copy: read a file, re-declare its tensors in reverse order, write them).
"""
import json
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402

np = qstest.need("numpy")
st = qstest.need("safetensors")
from safetensors import TensorSpec, serialize  # noqa: E402
import safetensors.numpy as stnp  # noqa: E402

TOOL = os.environ.get("QS_IO_TOOL") or os.path.join(os.environ.get("QS_BUILD_DIR", "build"), "tests", "io_tool")
tmp = qstest.tmpdir("qs-io-st-")


def tool(*args, expect=0):
    p = subprocess.run([TOOL] + [str(a) for a in args], capture_output=True, text=True)
    if p.returncode != expect:
        raise AssertionError(f"io_tool {' '.join(map(str, args))} exited {p.returncode}, expected {expect}\n{p.stderr}")
    return p


def py_save(tensors, metadata=None):
    """The Python library's bytes. tensors: name -> (safetensors dtype name, ndarray)."""
    keep = []
    specs = {}
    for name, (dt, a) in tensors.items():
        a = np.array(a, order="C", copy=True)  # (ascontiguousarray would make 0-d arrays 1-d)
        keep.append(a)
        specs[name] = TensorSpec(dtype=dt, shape=list(a.shape), data_ptr=a.ctypes.data, data_len=a.nbytes)
    return bytes(serialize(specs, metadata=metadata))


def header_of(b):
    n = struct.unpack("<Q", b[:8])[0]
    return n, b[8:8 + n]


def roundtrip(label, tensors, metadata=None, chunk=None):
    """Python writes A; our reader+writer copies A to B; B must equal A byte for byte."""
    ref = py_save(tensors, metadata)
    a = os.path.join(tmp, f"{label}.py.safetensors")
    b = os.path.join(tmp, f"{label}.qs.safetensors")
    with open(a, "wb") as f:
        f.write(ref)
    tool("st-copy", a, b, *([chunk] if chunk else []))
    with open(b, "rb") as f:
        ours = f.read()
    return ref, ours, a


def check_identical(label, tensors, metadata=None, chunk=None):
    ref, ours, path = roundtrip(label, tensors, metadata, chunk)
    qstest.check(ours == ref, f"{label}: our file differs from safetensors' bytes\n"
                 f"ours: {header_of(ours)}\npy:   {header_of(ref)}")
    check_reader(path, tensors, metadata)
    return path


def to_f32(dt, a):
    """Independent reference conversion to float32."""
    if dt == "bfloat16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def check_reader(path, tensors, metadata):
    """Our reader (st-dump) against the arrays and an independent header parse."""
    out = json.loads(tool("st-dump", path).stdout)
    with open(path, "rb") as f:
        raw = f.read()
    n, hdr = header_of(raw)
    parsed = json.loads(hdr)
    qstest.check(out["metadata"] == (metadata or {}), f"{path}: metadata {out['metadata']} != {metadata}")
    names = [t["name"] for t in out["tensors"]]
    qstest.check(names == sorted(tensors, key=lambda s: s.encode()), f"{path}: names not sorted/complete: {names}")
    for t in out["tensors"]:
        dt, a = tensors[t["name"]]
        e = parsed[t["name"]]
        qstest.check(t["dtype"] == e["dtype"], f"{t['name']}: dtype {t['dtype']} != {e['dtype']}")
        qstest.check(t["shape"] == list(a.shape), f"{t['name']}: shape {t['shape']} != {a.shape}")
        qstest.check(t["offset"] == 8 + n + e["data_offsets"][0], f"{t['name']}: offset {t['offset']}")
        qstest.check(bytes.fromhex(t["hex"]) == a.tobytes(), f"{t['name']}: bytes differ")
        if "f32" in t:
            want = to_f32(dt, a).ravel()
            got = np.array(t["f32"], dtype=np.float64).astype(np.float32)
            qstest.check(got.shape == want.shape and np.array_equal(got.view(np.uint32), want.view(np.uint32)),
                         f"{t['name']}: f32 values differ")


rng = np.random.default_rng(7)


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def bf16(*shape):
    return (f32(*shape).view(np.uint32) >> 16).astype(np.uint16)


base = {
    "model.layers.0.self_attn.q_proj.weight": ("float32", f32(6, 4)),
    "model.layers.0.self_attn.k_proj.weight": ("float32", f32(2, 4)),
    "model.norm.weight": ("float16", f32(4).astype(np.float16)),
    "model.embed_tokens.weight": ("bfloat16", bf16(5, 4)),
    "lm_head.weight": ("bfloat16", bf16(5, 4)),
    "ids": ("int32", rng.integers(-2**31, 2**31 - 1, size=(3, 2), dtype=np.int32)),
    "pos": ("int64", rng.integers(-2**62, 2**62, size=(7,), dtype=np.int64)),
    "scalar": ("float32", np.array(3.25, dtype=np.float32)),
    "scalar_i64": ("int64", np.array(-5, dtype=np.int64)),
    "empty": ("float32", np.zeros((0, 4), dtype=np.float32)),
    "empty_i32": ("int32", np.zeros((3, 0), dtype=np.int32)),
    "d": ("float64", rng.standard_normal(3)),
    "i8": ("int8", np.array([-1, 2, 3], dtype=np.int8)),
    "u8": ("uint8", np.array([250, 2], dtype=np.uint8)),
    "mask": ("bool", np.array([True, False, True])),
    "i16": ("int16", np.array([-300, 7], dtype=np.int16)),
}

check_identical("base", base)
check_identical("base_meta", base, {"format": "pt"})
check_identical("chunked", base, {"format": "pt"}, chunk=3)
check_identical("single", {"x": ("float32", f32(1))})
check_identical("no_tensors_meta", {}, {"k": "v"})
# every header padding residue: names of length 1..16
for k in range(1, 17):
    check_identical(f"pad{k}", {"n" * k: ("float16", f32(3).astype(np.float16)), "m": ("int32", np.arange(3, dtype=np.int32))})
# JSON escaping: quotes, backslashes, control characters, non-ASCII, '/'
odd = {
    'we"ird\\name': ("float32", f32(2)),
    "tab\there\nnew\x01\x1f": ("float32", f32(2)),
    "ünïcödé/名前": ("float16", f32(2).astype(np.float16)),
    "W": ("float32", f32(1)),
}
check_identical("escapes", odd, {"note": 'a "quoted"\\ value\n\x02 é'})

# Several metadata keys: the Python library orders them by hash (varies per
# run); we write them sorted. Same bytes once Python's metadata is re-sorted.
md = {f"key{i}": f"value{i}" for i in (5, 3, 9, 1, 7)}
ref, ours, path = roundtrip("multi_meta", base, md)
qstest.check(len(ours) == len(ref), "multi_meta: sizes differ")
qstest.check(ours[8 + header_of(ref)[0]:] == ref[8 + header_of(ref)[0]:], "multi_meta: data regions differ")
n, h = header_of(ref)
pyhdr = json.loads(h)
want = "{" + '"__metadata__":' + json.dumps(dict(sorted(pyhdr["__metadata__"].items())), separators=(",", ":"))
qstest.check(header_of(ours)[1].decode().startswith(want), f"multi_meta: metadata not sorted: {header_of(ours)[1][:200]}")
check_reader(path, base, md)

# The library's own file writer (save_file) gives the same bytes as serialize().
npd = {"a": f32(3, 2), "b": np.arange(4, dtype=np.int64), "c": f32(2).astype(np.float16)}
pf = os.path.join(tmp, "save_file.safetensors")
stnp.save_file(npd, pf, metadata={"format": "np"})
qf = os.path.join(tmp, "save_file.qs.safetensors")
tool("st-copy", pf, qf)
with open(pf, "rb") as f1, open(qf, "rb") as f2:
    qstest.check(f1.read() == f2.read(), "save_file output differs from ours")
# and the library reads what we wrote
back = stnp.load_file(qf)
for k, v in npd.items():
    qstest.check(np.array_equal(back[k], v) and back[k].dtype == v.dtype, f"safetensors.numpy cannot read our {k}")

# The real shared checkpoint: our reader against safetensors.numpy (F32 file)
# and against a NumPy parse of the raw bytes (BF16 file; numpy has no bfloat16).
try:
    model = qstest.shared("models", "tinystories-656K")
except SystemExit:
    model = None
if model:
    for fname in ("model.f32.safetensors", "model.safetensors"):
        path = os.path.join(model, fname)
        out = json.loads(tool("st-dump", path).stdout)
        with open(path, "rb") as f:
            raw = f.read()
        n, hdr = header_of(raw)
        parsed = json.loads(hdr)
        ref = stnp.load_file(path) if fname == "model.f32.safetensors" else None
        qstest.check(len(out["tensors"]) == len([k for k in parsed if k != "__metadata__"]), f"{fname}: tensor count")
        for t in out["tensors"]:
            e = parsed[t["name"]]
            b0, b1 = e["data_offsets"]
            data = raw[8 + n + b0:8 + n + b1]
            if e["dtype"] == "BF16":
                want = (np.frombuffer(data, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                want = ref[t["name"]].ravel()
            got = np.array(t["f32"], dtype=np.float64).astype(np.float32)
            qstest.check(np.array_equal(got.view(np.uint32), want.view(np.uint32)), f"{fname}: {t['name']} differs")
        qstest.check(out["metadata"] == parsed.get("__metadata__", {}), f"{fname}: metadata")
print("ok")
