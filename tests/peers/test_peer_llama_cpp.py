"""qshard's GGUF of tinystories-656K (and of the tokenizer fixtures) read by
llama.cpp itself, through llama-cpp-python (built from source by
scripts/install_peers.sh, stage 2).

Tokenizer (llama.cpp's ids against HF `tokenizers` on the same tokenizer.json):
- tinystories-656K has byte_fallback but no <0xXX> tokens; the export writes it
  as llama.cpp BPE with pre "sarvam-moe" (docs/gguf.md, "Vocabulary") and
  `qshard run` prints one warning line saying so. Checked: no abort on the
  TinyStories text nor on strings with tabs, emoji, CJK, accents and ASCII
  the vocabulary lacks; on every newline-free paragraph and on every such
  string, llama.cpp's ids for " " + text equal HF's ids for the text with its
  <unk> ids left out (llama.cpp skips what HF calls <unk>). Over text with
  newlines the differing tokens are counted and printed (no token across a
  newline in llama.cpp).
- the fixtures on a synthetic llama: metaspace.json (byte_fallback with all
  256 byte tokens → llama.cpp SPM): ids equal HF's on every string without a
  tab, trailing space or digit (its normalizer and Digits pre-tokenizer, which
  llama.cpp cannot apply and the export's warning names); bytelevel.json
  (GPT-2) and llama3ish.json (Llama-3) → llama.cpp BPE: ids equal on every
  string (llama3ish's single_word "cat" kept out of the strings).
NLL: the Q4_0 GGUF from the same `qshard run` as the GPTQ export, 8 rows × 128
tokens (ids from HF), mean NLL from llama.cpp's logits against `qshard eval`
of the GPTQ export (the same integers): within 5e-3 (llama.cpp rounds
activations to Q8 for its Q4_0 dot products).
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


def tinystories_tokens(model, gguf, text):
    tok = tokenizers.Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
    m = vocab_only(gguf)
    unk = tok.token_to_id("<unk>")
    pars = [p.strip() for p in text.split("\n\n") if p.strip()]
    flat = [p for p in pars if "\n" not in p][:300]
    eq = sum(lcpp(m, " " + p) == tok.encode(p, add_special_tokens=False).ids for p in flat)
    print(f"tinystories-656K: {eq}/{len(flat)} newline-free paragraphs give HF's ids (text after a space)")
    check(eq == len(flat), "llama.cpp ids differ from HF on a newline-free paragraph")
    n_unk = 0
    for s in STRINGS:
        h = tok.encode(s, add_special_tokens=False).ids
        n_unk += h.count(unk)
        got, want = lcpp(m, " " + s), [i for i in h if i != unk]
        check(got == want, f"{s!r}: llama.cpp {got} vs HF without <unk> {want}")
    print(f"tinystories-656K: {len(STRINGS)}/{len(STRINGS)} strings with tabs, emoji, CJK, accents, brackets: "
          f"no abort, ids = HF's without its {n_unk} <unk>")
    chunks = [text[i:i + 4000] for i in range(0, 200000, 4000)]
    nt = nd = 0
    for c in chunks:
        h = tok.encode(c, add_special_tokens=False).ids
        nt, nd = nt + len(h), nd + n_diff(h, lcpp(m, " " + c))
    print(f"tinystories-656K: text with newlines ({len(chunks)} chunks of 4000 chars): {nd} of {nt} HF tokens "
          "differ (tokens across a newline), no abort")
    return nd, nt


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


def q4_nll(gguf, tokens):
    m = llama_cpp.Llama(gguf, n_ctx=tokens.shape[1], n_batch=tokens.shape[1], logits_all=True, verbose=False,
                        n_threads=int(os.environ.get("OMP_NUM_THREADS", "2")))
    rows = []
    for row in tokens:
        m.reset()
        m.eval([int(t) for t in row])
        rows.append(np.array(m.scores[:len(row)], dtype=np.float64))
    return peers.mean_nll(np.stack(rows), tokens)


def main():
    tmp = qstest.tmpdir("qs-peer-llama-")
    print(peers.versions("llama_cpp_python", "tokenizers", "numpy"),
          "; CPU has AMX: use_extra_bufts=False" if AMX else "; CPU without AMX (use_extra_bufts left on)")
    text = open(qstest.shared("text", "tinystories_valid_head.txt"), encoding="utf-8").read()
    model, out, evalt = peers.quantize_tinystories(tmp, "gptq,gguf")
    gguf = os.path.join(out, "model.gguf")
    warn = [line for line in peers.LAST_RUN.stderr.splitlines() if "warning" in line]
    check(len(warn) == 1 and "sarvam-moe" in warn[0] and "model.gguf" in warn[0],
          f"qshard run should print one warning line for the vocabulary: {warn}")
    print(warn[0].strip())
    tinystories_tokens(model, gguf, text)
    fixture_tokens(tmp, text)

    tokens = np.load(evalt)
    ref = peers.qshard_eval(out, evalt)
    got = q4_nll(gguf, tokens)
    print(f"Q4_0 GGUF: llama.cpp NLL {got:.6f}, qshard eval of the GPTQ export {ref:.6f} (diff {got - ref:+.2e}) "
          f"on {tokens.shape[0]}x{tokens.shape[1]} tokens")
    check(abs(got - ref) < 5e-3, f"llama.cpp NLL {got} vs qshard {ref}")
    print("ok")


if __name__ == "__main__":
    main()
