"""npy interop: our writer is byte-identical to numpy.save, our reader reads
what NumPy writes (format 1.0, 2.0, 3.0), and refuses what it cannot load with
one clear line and exit code 2. io_tool (tests/unit/io_tool.c) exposes
qs_npy_read/_f32/_i32 and qs_npy_write."""
import io
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402

np = qstest.need("numpy")
from numpy.lib import format as npfmt  # noqa: E402

TOOL = os.environ.get("QS_IO_TOOL") or os.path.join(os.environ.get("QS_BUILD_DIR", "build"), "tests", "io_tool")
tmp = qstest.tmpdir("qs-io-npy-")


def tool(*args, expect=0):
    p = subprocess.run([TOOL] + [str(a) for a in args], capture_output=True, text=True)
    if p.returncode != expect:
        raise AssertionError(f"io_tool {' '.join(map(str, args))} exited {p.returncode}, expected {expect}\n{p.stderr}")
    return p


def np_bytes(a, version=None):
    b = io.BytesIO()
    if version:
        npfmt.write_array(b, a, version=version)
    else:
        np.save(b, a)
    return b.getvalue()


rng = np.random.default_rng(3)
arrays = {
    "f32_2d": rng.standard_normal((3, 4)).astype(np.float32),
    "f32_1d": rng.standard_normal(5).astype(np.float32),
    "f32_0d": np.array(1.25, dtype=np.float32),
    "f32_empty": np.zeros((0, 7), dtype=np.float32),
    "f16_3d": rng.standard_normal((2, 3, 4)).astype(np.float16),
    "f64": rng.standard_normal((4, 2)),
    "i32": rng.integers(-2**31, 2**31 - 1, size=(6, 5), dtype=np.int32),
    "i64": rng.integers(-2**62, 2**62, size=(3,), dtype=np.int64),
    "tokens": rng.integers(0, 2048, size=(4, 33), dtype=np.int64),
    "long_axis": np.zeros(123456, dtype=np.float32),
    "many_dims": np.zeros((1, 2, 1, 2, 1, 2, 1, 2), dtype=np.int32),
}

for name, a in arrays.items():
    ref = np_bytes(a)
    src = os.path.join(tmp, f"{name}.npy")
    dst = os.path.join(tmp, f"{name}.qs.npy")
    with open(src, "wb") as f:
        f.write(ref)
    tool("npy-copy", src, dst)
    with open(dst, "rb") as f:
        ours = f.read()
    qstest.check(ours == ref, f"{name}: our .npy differs from numpy.save\nours {ours[:128]!r}\nnp   {ref[:128]!r}")
    back = np.load(dst)
    qstest.check(back.dtype == a.dtype and back.shape == a.shape and np.array_equal(back, a), f"{name}: np.load")
    # format 2.0 and 3.0 headers read too; we write them back as numpy.save would (1.0)
    for ver in ((2, 0), (3, 0)):
        v = os.path.join(tmp, f"{name}.v{ver[0]}.npy")
        with open(v, "wb") as f:
            f.write(np_bytes(a, ver))
        tool("npy-copy", v, dst)
        with open(dst, "rb") as f:
            qstest.check(f.read() == ref, f"{name}: v{ver[0]} read + write differs from numpy.save")

    if a.dtype.kind == "f":
        out = json.loads(tool("npy-dump", src, "f32").stdout)
        got = np.array(out["values"], dtype=np.float64).astype(np.float32)
        want = a.astype(np.float32).ravel()
        qstest.check(out["shape"] == list(a.shape), f"{name}: shape {out['shape']}")
        qstest.check(np.array_equal(got.view(np.uint32), want.view(np.uint32)), f"{name}: read_f32 values differ")
        tool("npy-dump", src, "i32", expect=2)
    else:
        fits = int(np.abs(a).max(initial=0)) <= 2**31 - 1
        p = tool("npy-dump", src, "i32", expect=0 if fits else 2)
        if fits:
            out = json.loads(p.stdout)
            qstest.check(out["dtype"] == "I32" and out["values"] == a.ravel().tolist(),
                         f"{name}: read_i32 values differ")
        tool("npy-dump", src, "f32", expect=2)

# Out-of-range int64 ids are refused (the in-range token array converted above).
big = os.path.join(tmp, "i64.npy")
p = tool("npy-dump", big, "i32", expect=2)
qstest.check("outside int32" in p.stderr and big in p.stderr, p.stderr)


def bad(label, data, needle):
    path = os.path.join(tmp, f"bad_{label}.npy")
    with open(path, "wb") as f:
        f.write(data)
    p = tool("npy-dump", path, "raw", expect=2)
    lines = p.stderr.strip().splitlines()
    qstest.check(len(lines) == 1, f"{label}: expected one stderr line, got {p.stderr!r}")
    qstest.check(path in lines[0] and needle in lines[0], f"{label}: '{needle}' not in {lines[0]!r}")


f32 = rng.standard_normal((3, 4)).astype(np.float32)
bad("fortran", np_bytes(np.asfortranarray(f32)), "Fortran order")
bad("big_endian", np_bytes(f32.astype(">f4")), "big-endian")
bad("uint8", np_bytes(np.zeros(3, np.uint8)), "unsupported dtype '|u1'")
bad("bool", np_bytes(np.zeros(3, bool)), "unsupported dtype '|b1'")
bad("complex", np_bytes(np.zeros(3, np.complex64)), "unsupported dtype '<c8'")
bad("structured", np_bytes(np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")])), "structured")
bad("truncated", np_bytes(f32)[:-5], "truncated")
bad("trailing", np_bytes(f32) + b"\0\0\0\0", "trailing")
bad("header_cut", np_bytes(f32)[:40], "longer than the file")
bad("not_npy", b"PK\x03\x04" + b"\0" * 100, "not a .npy file")
bad("empty", b"", "not a .npy file")
print("ok")
