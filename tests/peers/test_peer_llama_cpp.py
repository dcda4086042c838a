"""qshard's GGUF of tinystories-656K (and of the tokenizer fixtures) read by
llama.cpp itself, through llama-cpp-python (built from source by
scripts/install_peers.sh, stage 2).

Tokenizer (llama.cpp's ids against HF `tokenizers` on the same tokenizer.json):
- tinystories-656K has byte_fallback but no <0xXX> tokens; the export writes
  it as llama.cpp SPM with the 179 byte tokens it lacks appended (ids 2048 on,
  embedding rows copies of <unk>'s; docs/gguf.md, "Vocabulary"), and `qshard
  run` prints one warning line saying so. Checked: no abort on the whole
  shared TinyStories text nor on strings with tabs, emoji, CJK, accents and
  ASCII the vocabulary lacks, and llama.cpp's ids equal HF's on all of it
  with each HF <unk> written as the UTF-8 bytes of the characters it covers
  (their byte token ids) — HF's ids exactly wherever the vocabulary has the
  pieces.
- the fixtures on a synthetic llama: metaspace.json (byte_fallback with all
  256 byte tokens → llama.cpp SPM): ids equal HF's on every string without a
  tab, trailing space or digit (its normalizer and Digits pre-tokenizer, which
  llama.cpp cannot apply and the export's warning names); bytelevel.json
  (GPT-2) and llama3ish.json (Llama-3) → llama.cpp BPE: ids equal on every
  string (llama3ish's single_word "cat" kept out of the strings).
NLL: the Q4_0 GGUF from the same `qshard run` as the GPTQ export, 8 rows × 128
tokens (ids from HF), mean NLL from llama.cpp's logits against `qshard eval`
of the GPTQ export (the same integers): over the model's 2048 logits within
5e-3 (llama.cpp rounds activations to Q8 for its Q4_0 dot products); the
padded logits equal <unk>'s (tied embeddings), and the NLL over all 2227
logits — what a llama.cpp user gets — is above it by the probability mass
they add (printed; under 1e-3). A byte token in the input gives exactly the
logits <unk> gives in its place.
On CPUs with AMX, llama.cpp 0.3.36 crashes in llama_decode on Q4_0 files unless
the model is loaded with use_extra_bufts=False; the test does that there and
says so.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402

peers.enter("llama")
import difflib  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import tokenizers  # noqa: E402
import llama_cpp  # noqa: E402

qstest = peers.qstest
check = qstest.check

STRINGS = [
    "a\tb\tc", "\tIndented with a tab.", "Lily saw a 😀 and a 🐶.", "Emoji only: 🚀🚀🚀",
    "日本語のテキスト", "東京 and 北京", "café naïve résumé façade", "Zürich straße Ωmega",
    "Mixed: Tom said «hello» — and ‘left’…", "Brackets (x) [y] {z} #1 50% a&b a+b a/b a*b @c ~d",
    "Once upon a time, there was a little girl named Lily.", "He said, \"Wow!\" and smiled.",
    "Numbers 123 and 4567.", "Spaces  two   three", "End with space ",
]


def has_amx():
    try:
        return any("amx_tile" in line.split() for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except OSError:
        return False


AMX = has_amx()
if AMX:
    # llama.cpp 0.3.36 crashes in llama_decode on Q4_0 with the AMX repacking
    # buffers; llama-cpp-python has no keyword for use_extra_bufts
    _defaults = llama_cpp.llama_model_default_params

    def _no_extra_bufts():
        p = _defaults()
        p.use_extra_bufts = False
        return p
    llama_cpp.llama_model_default_params = _no_extra_bufts
    llama_cpp.llama.llama_cpp.llama_model_default_params = _no_extra_bufts


def vocab_only(path):
    return llama_cpp.Llama(path, vocab_only=True, verbose=False)


def lcpp(m, text):
    return m.tokenize(text.encode("utf-8"), add_bos=False, special=False)


def n_diff(a, b):
    return sum(max(i2 - i1, j2 - j1) for op, i1, i2, j1, j2 in
               difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if op != "equal")


def byte_ids(tok, n_vocab):
    """byte → the id of the byte token appended for it (docs/gguf.md,
    "Vocabulary"), from tokenizer.json: the bytes with neither <0xXX> nor
    (ASCII) a one-character token, in order, after the model's rows."""
    vocab = tok.get_vocab(with_added_tokens=False)
    pad = [b for b in range(256) if f"<0x{b:02X}>" not in vocab and not (0 < b < 128 and chr(b) in vocab)]
    return {b: n_vocab + k for k, b in enumerate(pad)}


def hf_with_bytes(tok, text, unk, bytes_to_id):
    """HF's ids for text, each <unk> written as the byte tokens of the UTF-8
    bytes of the characters it covers (what llama.cpp's byte fallback gives);
    also how many <unk> there were."""
    e = tok.encode(text, add_special_tokens=False)
    out, n_unk = [], 0
    for i, (a, b) in zip(e.ids, e.offsets):
        if i != unk:
            out.append(i)
            continue
        n_unk += 1
        span = text[a:b]
        check(span and " " not in span, f"<unk> over {span!r}")
        out += [bytes_to_id[x] for x in span.encode("utf-8")]
    return out, n_unk


def tinystories_tokens(model, gguf, text):
    tok = tokenizers.Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
    m = vocab_only(gguf)
    unk = tok.token_to_id("<unk>")
    bytes_to_id = byte_ids(tok, 2048)
    check(m.n_vocab() == 2048 + len(bytes_to_id) == 2227, f"llama.cpp n_vocab {m.n_vocab()}")
    n_unk = n_str = 0
    for s in STRINGS:
        want, nu = hf_with_bytes(tok, s, unk, bytes_to_id)
        got = lcpp(m, s)
        n_unk += nu
        n_str += got == tok.encode(s, add_special_tokens=False).ids
        check(got == want, f"{s!r}: llama.cpp {got} vs HF with <unk> as bytes {want}")
    print(f"tinystories-656K: {len(STRINGS)}/{len(STRINGS)} strings with tabs, emoji, CJK, accents, brackets: "
          f"no abort, ids = HF's with its {n_unk} <unk> as byte tokens ({n_str} strings without <unk>: HF's exactly)")
    want, nu = hf_with_bytes(tok, text, unk, bytes_to_id)
    got = lcpp(m, text)
    hf = tok.encode(text, add_special_tokens=False).ids
    nd = n_diff(want, got)
    print(f"tinystories-656K: the whole shared text ({len(text)} characters, one call): {len(hf)} HF tokens, "
          f"{nd} differ from llama.cpp's (HF's {nu} <unk> as byte tokens), no abort")
    check(nd == 0, f"llama.cpp differs from HF on {nd} tokens of the TinyStories text")
    return nd, len(hf), bytes_to_id


def fixture_tokens(tmp, text):
    tool = os.environ.get("QS_GGUF_TOOL") or os.path.join(os.environ.get("QS_BUILD_DIR", "build"), "tests", "gguf_tool")
    if not os.path.exists(tool):
        qstest.skip(f"{tool} is not built")
    synth = os.path.join(tmp, "synth")
    qstest.run(["synth", "--arch", "llama", "--layers", 1, "--hidden", 64, "--heads", 4, "--kv-heads", 2,
                "--ffn", 128, "--vocab", 2048, "--out", synth])
    sample = [p.strip() for p in text.split("\n\n") if p.strip()][:40]
    import subprocess
    # metaspace.json: its normalizer turns tabs into spaces and strips the end,
    # and its Digits pre-tokenizer splits "▁1" — the export's warning names all
    # three; strings they touch are checked for no abort only
    for fixture, warned in (("metaspace.json", lambda s: "\t" in s or s.endswith(" ") or any(c.isdigit() for c in s)),
                            ("bytelevel.json", lambda s: False), ("llama3ish.json", lambda s: False)):
        path = peers.qstest.source("tests", "fixtures", "tokenizers", fixture)
        out = os.path.join(tmp, fixture + ".gguf")
        p = subprocess.run([tool, "--model", synth, "--out", out, "--tokenizer", path], capture_output=True, text=True)
        check(p.returncode == 0, f"gguf_tool {fixture}: {p.stderr}")
        tok = tokenizers.Tokenizer.from_file(path)
        m = vocab_only(out)
        strings = [s for s in STRINGS + sample if not warned(s) and "cat" not in s]
        bad = [s for s in strings if lcpp(m, s) != tok.encode(s, add_special_tokens=False).ids]
        for s in [s for s in STRINGS if s not in strings]:
            lcpp(m, s)  # no abort
        kind = "byte_fallback" if json.load(open(path))["model"].get("byte_fallback") else "byte-level"
        print(f"{fixture} ({kind}): {len(strings) - len(bad)}/{len(strings)} strings give HF's ids")
        check(not bad, f"{fixture}: llama.cpp ids differ from HF on {bad[:2]}")


def q4_logits(gguf, tokens):
    """llama.cpp's logits [rows, L, n_vocab] for each row of tokens."""
    m = llama_cpp.Llama(gguf, n_ctx=tokens.shape[1], n_batch=tokens.shape[1], logits_all=True, verbose=False,
                        n_threads=int(os.environ.get("OMP_NUM_THREADS", "2")))
    rows = []
    for row in tokens:
        m.reset()
        m.eval([int(t) for t in row])
        rows.append(np.array(m.scores[:len(row)], dtype=np.float64))
    return np.stack(rows)


def main():
    tmp = qstest.tmpdir("qs-peer-llama-")
    print(peers.versions("llama_cpp_python", "tokenizers", "numpy"),
          "; CPU has AMX: use_extra_bufts=False" if AMX else "; CPU without AMX (use_extra_bufts left on)")
    text = open(qstest.shared("text", "tinystories_valid_head.txt"), encoding="utf-8").read()
    model, out, evalt = peers.quantize_tinystories(tmp, "gptq,gguf")
    gguf = os.path.join(out, "model.gguf")
    warn = [line for line in peers.LAST_RUN.stderr.splitlines() if "warning" in line]
    check(len(warn) == 1 and "179 byte tokens" in warn[0] and "<unk>" in warn[0] and "model.gguf" in warn[0],
          f"qshard run should print one warning line for the vocabulary: {warn}")
    print(warn[0].strip())
    _, _, bytes_to_id = tinystories_tokens(model, gguf, text)
    fixture_tokens(tmp, text)

    tokens = np.load(evalt)
    ref = peers.qshard_eval(out, evalt)
    lg = q4_logits(gguf, tokens)
    check(lg.shape[2] == 2227, f"logits over {lg.shape[2]} tokens")
    check((lg[..., 2048:] == lg[..., :1]).all(), "padded logits differ from <unk>'s (tied embeddings)")
    model_nll, full_nll = peers.mean_nll(lg[..., :2048], tokens), peers.mean_nll(lg, tokens)
    print(f"Q4_0 GGUF, {tokens.shape[0]}x{tokens.shape[1]} tokens: llama.cpp NLL over the model's 2048 logits "
          f"{model_nll:.7f}, qshard eval of the GPTQ export {ref:.7f} (diff {model_nll - ref:+.2e}); over all 2227 "
          f"logits {full_nll:.7f} (the 179 padded rows add {full_nll - model_nll:+.2e})")
    check(abs(model_nll - ref) < 5e-3, f"llama.cpp NLL {model_nll} vs qshard {ref}")
    check(0 < full_nll - model_nll < 1e-3, f"padding cost {full_nll - model_nll}")
    # what an untied output.weight with other padded rows would give: rows that
    # are combinations of embedding rows have the same combination of these
    # logits, so their NLL follows from llama.cpp's own logits (docs/gguf.md)
    unk_l = lg[..., :1]
    alt = {"zero rows": np.zeros_like(unk_l), "2 x <unk> row": 2 * unk_l, "4 x <unk> row": 4 * unk_l,
           "mean embedding row": lg[..., :2048].mean(-1, keepdims=True)}
    print("untied output rows instead, NLL over 2227 logits: " + ", ".join(
        f"{k} {peers.mean_nll(np.concatenate([lg[..., :2048], np.repeat(v, 179, -1)], -1), tokens) - model_nll:+.2e}"
        for k, v in alt.items()) + f" (tied <unk> copies {full_nll - model_nll:+.2e})")

    # a character outside the vocabulary (a tab: one byte token) feeds the model
    # what HF's <unk> feeds it
    row = tokens[:1].copy()
    row[0, 40] = 0
    with_unk = q4_logits(gguf, row)
    row[0, 40] = bytes_to_id[0x09]
    with_byte = q4_logits(gguf, row)
    check(np.array_equal(with_unk, with_byte), "logits after <0x09> differ from those after <unk>")
    print("<0x09> in place of <unk> at position 40: identical logits at every position")
    print("ok")


if __name__ == "__main__":
    main()
