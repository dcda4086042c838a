"""Shared helpers of the hardening tests (issue 15), test-only code.

- xxh64: XXH64 written from the specification (no C code of qshard's), so a
  test can forge a block checkpoint whose checksum is valid; it is checked
  against a checkpoint qshard wrote before it is trusted.
- tiny_run: a small synthetic llama, calibration tokens and the `qshard run`
  command line for it (one rank, seconds even under ASan).
- one_error_line: the stderr of a failed command is exactly one line.
"""
import os
import struct
import subprocess

import qstest

# In the ASan build (the "unit" label), LeakSanitizer must not count Open
# MPI's own never-freed allocations at MPI_Init against `qshard run`:
# suppress those (tests/lsan_openmpi.supp), keep every other leak fatal.
# Open MPI's libraries have no frame pointers: the slow unwinder is needed
# for stacks that reach them (and so for the suppressions to match).
os.environ["OMPI_MCA_mca_base_component_disable_dlclose"] = "1"
_supp = qstest.source("tests", "lsan_openmpi.supp")
os.environ["LSAN_OPTIONS"] = ":".join(x for x in (os.environ.get("LSAN_OPTIONS"), f"suppressions={_supp}:print_suppressions=0") if x)
os.environ["ASAN_OPTIONS"] = ":".join(x for x in (os.environ.get("ASAN_OPTIONS"), "fast_unwind_on_malloc=0") if x)

M = (1 << 64) - 1
P1, P2, P3, P4, P5 = (11400714785074694791, 14029467366897019727, 1609587929392839161,
                      9650029242287828579, 2870177450012600261)


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M


def _round(acc, lane):
    acc = (acc + lane * P2) & M
    return (_rotl(acc, 31) * P1) & M


def _merge(acc, val):
    acc ^= _round(0, val)
    return (acc * P1 + P4) & M


def xxh64(data, seed=0):
    n = len(data)
    i = 0
    if n >= 32:
        v = [(seed + P1 + P2) & M, (seed + P2) & M, seed & M, (seed - P1) & M]
        while i + 32 <= n:
            lanes = struct.unpack_from("<4Q", data, i)
            v = [_round(v[k], lanes[k]) for k in range(4)]
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & M
        for k in range(4):
            h = _merge(h, v[k])
    else:
        h = (seed + P5) & M
    h = (h + n) & M
    while i + 8 <= n:
        (k1,) = struct.unpack_from("<Q", data, i)
        h ^= _round(0, k1)
        h = (_rotl(h, 27) * P1 + P4) & M
        i += 8
    if i + 4 <= n:
        (k1,) = struct.unpack_from("<I", data, i)
        h ^= (k1 * P1) & M
        h = (_rotl(h, 23) * P2 + P3) & M
        i += 4
    while i < n:
        h ^= (data[i] * P5) & M
        h = (_rotl(h, 11) * P1) & M
        i += 1
    h ^= h >> 33
    h = (h * P2) & M
    h ^= h >> 29
    h = (h * P3) & M
    h ^= h >> 32
    return h


CKPT_SEED = 0x71736861726400  # "qshard", pipeline/checkpoint.c


def checkpoint_hash(f):
    """The checksum of an open h5py block checkpoint, as the format defines it:
    per linear its dims (rows, cols, groups, bits as int64), codes u8, scales
    f32, zeros i32, g_idx i32, in linear order; then the OmniQuant record."""
    import numpy as np
    parts = []
    for i in range(int(f.attrs["n_linears"])):
        g = f[f"linear{i}"]
        rows, cols = g["codes"].shape
        groups = g["scales"].shape[0]
        parts.append(struct.pack("<4q", rows, cols, groups, int(g.attrs["bits"])))
        parts.append(np.ascontiguousarray(g["codes"][()], dtype=np.uint8).tobytes())
        parts.append(np.ascontiguousarray(g["scales"][()], dtype=np.float32).tobytes())
        parts.append(np.ascontiguousarray(g["zeros"][()], dtype=np.int32).tobytes())
        parts.append(np.ascontiguousarray(g["g_idx"][()], dtype=np.int32).tobytes())
    if "omniquant" in f:
        # OmniQuant's record: fp/ then params/, each tensor in name order as
        # name + NUL, (ndim, shape0, shape1 or 0) as int64, f32 data; then the
        # loss curve as f64
        o = f["omniquant"]
        for grp in ("fp", "params"):
            for name in sorted(o[grp].keys(), key=lambda k: k.encode()):
                d = o[grp][name]
                shape = list(d.shape) + [0] * (2 - len(d.shape))
                parts.append(name.encode() + b"\0" + struct.pack("<3q", len(d.shape), shape[0], shape[1]))
                parts.append(np.ascontiguousarray(d[()], dtype=np.float32).tobytes())
        parts.append(np.ascontiguousarray(o["loss"][()], dtype=np.float64).tobytes())
    return xxh64(b"".join(parts), CKPT_SEED)


def stored_hash(f):
    v = f.attrs["xxh64"]
    return int(v.decode() if isinstance(v, bytes) else v, 16)


def forge(path, edit):
    """Applies edit(h5py.File) to a block checkpoint and stores a valid
    checksum for the result (after checking that this module computes the
    checksum qshard stored)."""
    h5py = qstest.need("h5py")
    with h5py.File(path, "r+") as f:
        qstest.check(checkpoint_hash(f) == stored_hash(f), f"{path}: the test's xxh64 disagrees with the file")
        edit(f)
        h = checkpoint_hash(f)
        del f.attrs["xxh64"]
        f.attrs.create("xxh64", f"{h:016x}".encode(), dtype=f"S{17}")


def synth(out_dir, layers=2, hidden=64, vocab=64, extra=()):
    qstest.run(["synth", "--arch", "llama", "--layers", layers, "--hidden", hidden, "--vocab", vocab,
                "--max-pos", 64, "--out", out_dir] + list(extra))


def tokens(path, vocab=64, rows=8, seq=16, seed=0):
    np = qstest.need("numpy")
    np.save(path, np.random.default_rng(seed).integers(0, vocab, size=(rows, seq)).astype(np.int32))


def run_args(model, calib, work, out, *extra):
    return ["run", "--model", model, "--calib", calib, "--work", work, "--out", out, "--group-size", "32",
            "--micro-batch", "4"] + list(extra)


def one_error_line(p, *words):
    """p failed with exactly one stderr line holding every word."""
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    qstest.check(len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{p.stderr}")
    for w in words:
        qstest.check(w in lines[0], f"'{w}' is not in the error line: {lines[0]}")
    return lines[0]


def files_of(d):
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def same_files(a, b, names):
    for n in names:
        with open(os.path.join(a, n), "rb") as x, open(os.path.join(b, n), "rb") as y:
            qstest.check(x.read() == y.read(), f"{n} differs between {a} and {b}")


def popen(args, **kw):
    return subprocess.Popen([qstest.qshard()] + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)
