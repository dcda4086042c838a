"""`qshard tokenize` end to end: the rows it writes are the HF `tokenizers` id
stream cut as documented (consecutive rows, --bos, random windows with the
documented splitmix64 sampler, --docs --no-prefix-space); .npy is read back
with NumPy and .h5 with h5py; bad input gives exit 2 and one line on stderr.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qstest  # noqa: E402

np, h5py, tokenizers = qstest.need("numpy", "h5py", "tokenizers")
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers  # noqa: E402

FIX = qstest.source("tests", "fixtures", "tokenizers")
sys.path.insert(0, FIX)
import make_bytelevel  # noqa: E402

M64 = (1 << 64) - 1


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def window_starts(seed, n_starts, rows):
    """The sampler docs/tokenizer.md describes: uniform starts by rejection."""
    limit = M64 - (M64 % n_starts)
    state, out = seed, []
    for _ in range(rows):
        while True:
            state, x = splitmix64(state)
            if x < limit:
                break
        out.append(x % n_starts)
    return out


def load_rows(path):
    if path.endswith(".npy"):
        a = np.load(path)
    else:
        with h5py.File(path, "r") as f:
            a = f["input_ids"][...]
    qstest.check(a.dtype == np.int32 and a.ndim == 2, f"{path}: dtype {a.dtype} ndim {a.ndim}, expected int32 2-D")
    return a


def expect_error(args, needle):
    p = qstest.run(args, expect=2)
    lines = p.stderr.strip().splitlines()
    qstest.check(len(lines) == 1, f"expected one error line, got: {p.stderr!r}")
    qstest.check(needle in lines[0], f"expected {needle!r} in {lines[0]!r}")


def check_tokenizer(tok, text_path, d, bos_id):
    text = open(text_path, encoding="utf-8").read()
    ref = Tokenizer.from_file(tok)
    ids = np.array(ref.encode(text, add_special_tokens=False).ids, dtype=np.int32)
    n = len(ids)

    # consecutive rows, incomplete tail dropped
    out = os.path.join(d, "rows.npy")
    p = qstest.run(["tokenize", "--tokenizer", tok, "--text", text_path, "--out", out, "--seq-len", 200])
    a = load_rows(out)
    rows = n // 200
    qstest.check(a.shape == (rows, 200), f"shape {a.shape}, expected ({rows}, 200)")
    qstest.check(np.array_equal(a.ravel(), ids[: rows * 200]), "consecutive rows differ from HF ids")
    qstest.check(f"{n - rows * 200} tokens dropped" in p.stdout, p.stdout)
    print(p.stdout.strip().splitlines()[0])

    # --bos, into HDF5: BOS + 127 stream tokens per row
    out = os.path.join(d, "bos.h5")
    qstest.run(["tokenize", "--tokenizer", tok, "--text", text_path, "--out", out, "--seq-len", 128, "--bos"])
    a = load_rows(out)
    rows = n // 127
    qstest.check(a.shape == (rows, 128), f"--bos shape {a.shape}")
    qstest.check((a[:, 0] == bos_id).all(), f"--bos: first column is not BOS {bos_id}")
    qstest.check(np.array_equal(a[:, 1:].ravel(), ids[: rows * 127]), "--bos rows differ from HF ids")
    # with add_special_tokens HF puts the same BOS in front (when its post-processor adds one)
    hf_special = ref.encode(text[:300], add_special_tokens=True).ids
    plain = ref.encode(text[:300], add_special_tokens=False).ids
    if len(hf_special) == len(plain) + 1:
        qstest.check(hf_special[0] == bos_id and hf_special[1:] == plain, "HF's BOS is not qshard's --bos id")

    # random windows: deterministic, and exactly where the documented sampler puts them
    out1, out2 = os.path.join(d, "r1.npy"), os.path.join(d, "r2.npy")
    for o in (out1, out2):
        qstest.run(["tokenize", "--tokenizer", tok, "--text", text_path, "--out", o, "--seq-len", 64, "--rows", 25,
                    "--seed", 1234, "--bos"])
    a, b = load_rows(out1), load_rows(out2)
    qstest.check(np.array_equal(a, b), "same seed, different windows")
    starts = window_starts(1234, n - 63 + 1, 25)
    want = np.stack([np.concatenate([[bos_id], ids[s:s + 63]]) for s in starts])
    qstest.check(np.array_equal(a, want), "random windows are not the documented ones")
    qstest.run(["tokenize", "--tokenizer", tok, "--text", text_path, "--out", out2, "--seq-len", 64, "--rows", 25,
                "--seed", 1235, "--bos"])
    qstest.check(not np.array_equal(a, load_rows(out2)), "a different seed gave the same windows")

    # --rows without --seed: the first N consecutive rows
    qstest.run(["tokenize", "--tokenizer", tok, "--text", text_path, "--out", out1, "--seq-len", 50, "--rows", 7])
    qstest.check(np.array_equal(load_rows(out1).ravel(), ids[:350]), "--rows 7 are not the first rows")

    # text too short for the rows asked
    expect_error(["tokenize", "--tokenizer", tok, "--text", text_path, "--out", out1, "--seq-len", n // 3 + 1,
                  "--rows", 3], "text too short")
    return text, ref, ids


def main():
    d = qstest.tmpdir()
    # --- the byte-level fixture on self-contained text ---
    gen = os.path.join(d, "gen.txt")
    with open(gen, "w", encoding="utf-8") as f:
        f.write("\n\n".join(make_bytelevel.corpus(seed=7, target=80_000)))
    bl = os.path.join(FIX, "bytelevel.json")
    check_tokenizer(bl, gen, d, bos_id=Tokenizer.from_file(bl).token_to_id("<|endoftext|>"))

    # --- TinyStories (../shared) ---
    ts = qstest.shared("models", "tinystories-656K", "tokenizer.json")
    text_path = qstest.shared("text", "tinystories_valid_head.txt")
    text, ref, ids = check_tokenizer(ts, text_path, d, bos_id=1)

    # --docs --no-prefix-space: each paragraph as BOS + pieces without the leading "▁",
    # which is what HF gives for "<|start_story|>" + paragraph (how the model was trained)
    out = os.path.join(d, "docs.npy")
    p = qstest.run(["tokenize", "--tokenizer", ts, "--text", text_path, "--out", out, "--seq-len", 128, "--docs",
                    "--no-prefix-space"])
    paras = [s.strip(" \n\t\r") for s in re.split(r"\n[ \t\r]*\n", text)]
    paras = [s for s in paras if s]
    stream, first300 = [], 0
    for i, s in enumerate(paras):
        e = ref.encode("<|start_story|>" + s, add_special_tokens=False).ids
        qstest.check(e[0] == 1, "HF did not match <|start_story|>")
        stream += e
        if i < 300:
            first300 += min(len(e), 512) - 1
    a = load_rows(out)
    rows = len(stream) // 128
    qstest.check(np.array_equal(a.ravel(), np.array(stream[: rows * 128], dtype=np.int32)), "--docs stream differs")
    qstest.check(f"{len(paras)} paragraphs" in p.stdout, p.stdout)
    # ../shared/models/README.md: 300 paragraphs give 13,976 predicted tokens this way
    qstest.check(first300 == 13976, f"first 300 paragraphs: {first300} predicted tokens, README says 13976")
    starts = [i for i, t in enumerate(a.ravel()) if t == 1]
    qstest.check(a.ravel()[starts[1] + 1] != ref.token_to_id("▁"), "paragraph starts with ▁ despite --no-prefix-space")

    # --- errors: one line, exit 2 ---
    o = os.path.join(d, "e.npy")
    expect_error(["tokenize", "--tokenizer", ts, "--text", os.path.join(d, "missing.txt"), "--out", o], "missing.txt")
    expect_error(["tokenize", "--tokenizer", ts, "--text", text_path, "--out", os.path.join(d, "x.csv")],
                 "unknown token set format")
    expect_error(["tokenize", "--tokenizer", ts, "--text", text_path, "--out", o, "--seed", 3], "--seed needs --rows")
    expect_error(["tokenize", "--tokenizer", ts, "--text", text_path, "--out", o, "--seq-len", 0], "--seq-len")
    expect_error(["tokenize", "--tokenizer", ts, "--text", text_path], "required")
    short = os.path.join(d, "short.txt")
    with open(short, "w") as f:
        f.write("Once upon a time")
    expect_error(["tokenize", "--tokenizer", ts, "--text", short, "--out", o, "--seq-len", 64], "text too short")
    badutf = os.path.join(d, "bad.txt")
    with open(badutf, "wb") as f:
        f.write(b"Once upon \xff time " * 100)
    expect_error(["tokenize", "--tokenizer", ts, "--text", badutf, "--out", o, "--seq-len", 4], "invalid UTF-8 at byte 10")
    broken = os.path.join(d, "broken.json")
    with open(broken, "w") as f:
        f.write(open(ts, encoding="utf-8").read()[:5000])
    expect_error(["tokenize", "--tokenizer", broken, "--text", text_path, "--out", o], "malformed JSON")
    # tokenizer.json files written by HF itself with models/normalizers qshard does not implement
    wp = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    uni = Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0)], 0, False))
    low = Tokenizer.from_file(bl)
    low.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    pre = Tokenizer.from_file(bl)
    pre.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    for tk, needle in ((wp, "model.type: 'WordPiece' is not supported"), (uni, "model.type: 'Unigram' is not supported"),
                       (low, "normalizer.normalizers[0].type: normalizer 'NFKC' is not supported"),
                       (pre, "pre_tokenizer.type: pre-tokenizer 'BertPreTokenizer' is not supported")):
        path = os.path.join(d, "unsupported.json")
        tk.save(path)
        expect_error(["tokenize", "--tokenizer", path, "--text", text_path, "--out", o], needle)
    no_bos = json.load(open(bl, encoding="utf-8"))
    no_bos["added_tokens"] = []
    path = os.path.join(d, "nobos", "tokenizer.json")
    os.makedirs(os.path.dirname(path))
    json.dump(no_bos, open(path, "w", encoding="utf-8"))
    expect_error(["tokenize", "--tokenizer", path, "--text", text_path, "--out", o, "--bos"], "no BOS token known")
    print("ok")


if __name__ == "__main__":
    main()
