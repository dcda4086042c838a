"""Token sets written by NumPy and h5py (independent writers) read with
qs_token_set_read: int32/int64 .npy, any-int HDF5 `input_ids`, and the
clear errors for what is not a token set.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qstest  # noqa: E402

np, h5py = qstest.need("numpy", "h5py")
TOOL = os.path.join(os.environ.get("QS_BUILD_DIR", "build"), "tests", "tokenizer_tool")


def read_set(path, vocab=None):
    args = [TOOL, "--read-set", path] + ([str(vocab)] if vocab is not None else [])
    return json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)


def main():
    if not os.path.exists(TOOL):
        qstest.skip(f"{TOOL} is not built")
    d = qstest.tmpdir()
    rng = np.random.default_rng(0)
    a = rng.integers(0, 50000, size=(7, 33))
    for dt in (np.int32, np.int64):
        p = os.path.join(d, f"t_{np.dtype(dt).name}.npy")
        np.save(p, a.astype(dt))
        r = read_set(p)
        qstest.check(r.get("shape") == [7, 33] and r["ids"] == a.ravel().tolist(), f"{p}: {str(r)[:200]}")
    for dt in ("i2", "<i4", ">i8", "u2", "u4"):
        p = os.path.join(d, f"t_{dt.replace('<', 'le').replace('>', 'be')}.h5")
        with h5py.File(p, "w") as f:
            f.create_dataset("input_ids", data=(a % 30000).astype(dt), chunks=(2, 11), compression="gzip")
            f.create_dataset("other", data=np.zeros(3))
        r = read_set(p)
        qstest.check(r.get("shape") == [7, 33] and r["ids"] == (a % 30000).ravel().tolist(), f"{p}: {str(r)[:200]}")

    def bad(path, needle, vocab=None):
        r = read_set(path, vocab)
        qstest.check("error" in r and needle in r["error"] and path in r["error"] and r["code"] == 1,
                     f"{path}: expected an input error with {needle!r}, got {str(r)[:300]}")

    p = os.path.join(d, "one_d.npy")
    np.save(p, np.arange(5, dtype=np.int32))
    bad(p, "expected 2 [rows, seq_len]")
    p = os.path.join(d, "float.npy")
    np.save(p, np.zeros((2, 2), dtype=np.float32))
    bad(p, "expected integer token ids")
    p = os.path.join(d, "neg.npy")
    np.save(p, np.array([[1, 2], [3, -4]], dtype=np.int64))
    bad(p, "token id [1,1] is -4")
    p = os.path.join(d, "big.npy")
    np.save(p, np.array([[1, 2**40]], dtype=np.int64))
    bad(p, "outside int32")
    p = os.path.join(d, "vocab.npy")
    np.save(p, np.array([[1, 2], [3, 2048]], dtype=np.int32))
    bad(p, "token id [1,1] is 2048, outside the vocabulary [0, 2048)", vocab=2048)
    p = os.path.join(d, "noids.h5")
    with h5py.File(p, "w") as f:
        f.create_dataset("tokens", data=np.zeros((2, 2), dtype=np.int32))
    bad(p, "no dataset 'input_ids'")
    p = os.path.join(d, "floatids.h5")
    with h5py.File(p, "w") as f:
        f.create_dataset("input_ids", data=np.zeros((2, 2), dtype=np.float32))
    bad(p, "not an integer array")
    p = os.path.join(d, "three_d.h5")
    with h5py.File(p, "w") as f:
        f.create_dataset("input_ids", data=np.zeros((2, 2, 2), dtype=np.int32))
    bad(p, "has 3 dimensions")
    p = os.path.join(d, "huge.h5")
    with h5py.File(p, "w") as f:
        f.create_dataset("input_ids", data=np.array([[2**33]], dtype=np.int64))
    bad(p, "input_ids[0,0] = 8589934592 is outside int32")
    p = os.path.join(d, "notreally.h5")
    with open(p, "w") as f:
        f.write("hello")
    bad(p, "not an HDF5 file")
    p = os.path.join(d, "x.csv")
    open(p, "w").close()
    bad(p, "unknown token set format")
    print("ok")


if __name__ == "__main__":
    main()
