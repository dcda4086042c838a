"""Hostile job files and tokenizer.json through the binary (issue 15, items 11 and 5).

The parsers are unit-tested in tests/unit/test_hostile_inputs.c; this test
checks what a user sees: the exit code, one stderr line naming the file and
the line or field, and nothing written.
- `qshard run JOB` where JOB has `bits = 4` then an indented `  3` (before:
  a 3-bit run, exit 0), or a key given twice (before: the second silently
  won): exit 2, one line "JOB:LINE: ...", no --out and no --work created.
- `qshard tokenize` with a 2-token tokenizer.json whose second id is
  2147483646 (before: tables sized for 2^31 ids, 8.4 GB): exit 2 with one
  line naming the field, under an address-space limit of 1 GiB so that the
  old behaviour cannot pass by having the memory. The same file with the id
  at 1 still tokenizes, and the ids written are those `tokenizers` (PyPI)
  gives.
Labelled unit: the CI runs it against the ASan + UBSan build too.
"""
import json
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402
import hostile  # noqa: E402

np = qstest.need("numpy")
tokenizers = qstest.need("tokenizers")
tmp = qstest.tmpdir("qs-hostile-cli-")
model, calib = os.path.join(tmp, "model"), os.path.join(tmp, "calib.npy")
hostile.synth(model)
hostile.tokens(calib)

# ---- job files ------------------------------------------------------------------------------
BASE = f"""[model]
model = {model}
[calibration]
calib = {calib}
[run]
work = {os.path.join(tmp, "work")}
[output]
out = {os.path.join(tmp, "out")}
[quantization]
group-size = 32
"""
CASES = [
    ("continuation", "bits = 4\n  3\n", ":12: ", "an indented line does not continue a value"),
    ("duplicate", "bits = 4\n; again\nbits = 3\n", ":13: ", "'bits' is already set on line 11"),
    ("duplicate across sections", "bits = 4\n[run]\nbits = 3\n", ":13: ", "already set on line 11"),
]
for name, tail, where, what in CASES:
    job = os.path.join(tmp, f"{name.replace(' ', '_')}.ini")
    with open(job, "w") as f:
        f.write(BASE + tail)
    p = qstest.run(["run", job], expect=2)
    hostile.one_error_line(p, job + where, what)
    qstest.check(not os.path.exists(os.path.join(tmp, "out")) and not os.path.exists(os.path.join(tmp, "work")),
                 f"{name}: an output or work dir was created")
    print(f"job file, {name}: exit 2, one line: {p.stderr.strip()}")


# ---- tokenizer.json ----------------------------------------------------------------------------
def tok_json(b_id):
    return {"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": None,
            "post_processor": None, "decoder": None,
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "fuse_unk": False,
                      "byte_fallback": False, "vocab": {"a": 0, "b": b_id}, "merges": []}}


with open(qstest.qshard(), "rb") as f:
    ASAN = b"__asan_init" in f.read()


def limit_as():
    # 1 GiB of address space: the old tables (2^31 ids) cannot fit. ASan
    # reserves terabytes of address space, so its build runs unlimited.
    if not ASAN:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, resource.RLIM_INFINITY))


text = os.path.join(tmp, "text.txt")
with open(text, "w") as f:
    f.write("abba" * 40)
bad = os.path.join(tmp, "tokenizer-bad.json")
with open(bad, "w") as f:
    json.dump(tok_json(2147483646), f)
out = os.path.join(tmp, "t.npy")
p = qstest.run(["tokenize", "--tokenizer", bad, "--text", text, "--out", out, "--seq-len", 8], expect=2,
               preexec_fn=limit_as)
hostile.one_error_line(p, bad, "model.vocab[b]: id 2147483646 is above")
qstest.check(not os.path.exists(out), "a token set was written")
print(f"tokenize, id 2147483646: exit 2, one line: {p.stderr.strip()}")

good = os.path.join(tmp, "tokenizer-good.json")
with open(good, "w") as f:
    json.dump(tok_json(1), f)
qstest.run(["tokenize", "--tokenizer", good, "--text", text, "--out", out, "--seq-len", 8, "--no-prefix-space"],
           preexec_fn=limit_as)
want = tokenizers.Tokenizer.from_file(good).encode("abba" * 40, add_special_tokens=False).ids
got = np.load(out)
qstest.check(got.shape == (len(want) // 8, 8) and got.flatten().tolist() == want[: got.size],
             f"tokenize with a sane id: {got.tolist()} vs tokenizers {want}")
print(f"tokenize, ids 0 and 1: {got.shape} rows, the same ids as tokenizers")
print("ok")
