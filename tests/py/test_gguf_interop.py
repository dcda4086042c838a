"""GGUF export read back with PyPI's gguf package (llama.cpp's own reader).

gguf_tool (tests/unit/gguf_tool.c) quantizes every linear of a model with
qshard's RTN/GPTQ, writes the GGUF through pipeline/export/export_gguf.h with P
forked "ranks", and dumps qshard's dequantized weights as .npy. Here:

- metadata keys, value types and values against config.json;
- tensor names, types and shapes (dims fastest first);
- gguf.quants.dequantize of every Q4_0 / Q8_0 linear equals qshard's
  dequantized weight exactly once the Q/K rows are un-permuted (and the
  converter's own permutation of qshard's weight gives the GGUF rows);
  Q4_1 stays within the documented bound; F16 fallback = fp16(dequantized);
- norms and the embedding equal the checkpoint (PyPI safetensors);
- tokens equal tokenizer.json's vocabulary in id order (PyPI tokenizers),
  token types, special ids; sentencepiece style → llama.cpp SPM with
  merge-rank scores; without a token for every byte (tinystories-656K,
  metaspace.json less <0x80>) the missing <0x..> byte tokens follow the
  model's rows (type BYTE, scored below every piece), llama.vocab_size counts
  them, and token_embd (and an untied output) get as many rows, copies of
  the rows of tokenizer.json's unk_token (zeros without one); one warning
  line naming what llama.cpp does differently;
- byte-identical files for 1 or 2 ranks, any write order, bf16 or f32 input;
- refusals: act-order without static groups, rows not a multiple of 32, opt.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qstest  # noqa: E402

np, gguf, tokenizers, safetensors = qstest.need("numpy", "gguf", "tokenizers", "safetensors")
from gguf import GGUFReader, GGUFValueType, GGMLQuantizationType as QT  # noqa: E402
from gguf.quants import dequantize  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

MODEL = qstest.shared("models", "tinystories-656K")
TOOL = os.environ.get("QS_GGUF_TOOL") or os.path.join(os.environ.get("QS_BUILD_DIR", "build"), "tests", "gguf_tool")
TMP = qstest.tmpdir("qs-gguf-")
check = qstest.check


def tool(*args, expect=0):
    p = subprocess.run([TOOL] + [str(a) for a in args], capture_output=True, text=True)
    if expect is not None and (p.returncode == 0) != (expect == 0):
        raise AssertionError(f"gguf_tool {' '.join(map(str, args))} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def kv(r, key):
    f = r.fields.get(key)
    check(f is not None, f"metadata key {key} missing")
    return f.contents()


def vtype(r, key):
    return r.fields[key].types[0]


def hf_to_gguf(w, n_head):
    """llama.cpp's converter permutation (LlamaModel.permute), written here."""
    out = w.shape[0]
    return w.reshape(n_head, 2, out // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_to_hf(w, n_head):
    out = w.shape[0]
    return w.reshape(n_head, out // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def deq(t):
    return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(int(t.shape[1]), int(t.shape[0]))


ROLES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
         "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
         "ffn_down": "mlp.down_proj"}


def check_linears(r, npy_dir, cfg, qtype, exact=True, roles=ROLES):
    tensors = {t.name: t for t in r.tensors}
    n_heads, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    worst = 0.0
    for layer in range(cfg["num_hidden_layers"]):
        for g, hf in roles.items():
            t = tensors[f"blk.{layer}.{g}.weight"]
            want = np.load(os.path.join(npy_dir, f"model.layers.{layer}.{hf}.weight.npy"))
            check(t.tensor_type == qtype, f"{t.name}: type {t.tensor_type.name}, expected {qtype.name}")
            check(list(t.shape) == [want.shape[1], want.shape[0]], f"{t.name}: shape {list(t.shape)} for HF {want.shape}")
            got = deq(t)
            heads = n_heads if g == "attn_q" else n_kv if g == "attn_k" else 0
            if heads:
                if exact:
                    check(np.array_equal(hf_to_gguf(want, heads), got),
                          f"{t.name}: GGUF rows are not the converter's permutation")
                    check(not np.array_equal(want, got), f"{t.name}: rows were not permuted")
                got = gguf_to_hf(got, heads)
            if exact:
                diff = np.abs(got - want).max()
                check(np.array_equal(got, want), f"{t.name}: dequantized GGUF differs from qshard's by up to {diff}")
            else:  # Q4_1: m = fp16(-d*zero); bound per block from its own d and m
                blocks = t.data.reshape(-1, 20)
                d = blocks[:, 0:2].copy().view(np.float16).astype(np.float64).reshape(want.shape[0], -1)
                m = blocks[:, 2:4].copy().view(np.float16).astype(np.float64).reshape(want.shape[0], -1)
                if heads:
                    d, m = gguf_to_hf(d, heads), gguf_to_hf(m, heads)
                bound = np.ldexp(np.abs(m), -11) + 2.0 ** -25 + 4 * np.finfo(np.float32).eps * (15 * d + np.abs(m))
                err = np.abs(got.astype(np.float64) - want).reshape(want.shape[0], -1, 32)
                check((err <= bound[:, :, None]).all(), f"{t.name}: Q4_1 error above the documented bound")
                worst = max(worst, float((err / d[:, :, None]).max()))
    return worst


def missing_bytes(vocab):
    """The bytes llama.cpp's SPM byte fallback finds no token for: neither
    <0xXX> nor, for ASCII, the character itself (llama-vocab.cpp, byte_to_token)."""
    return [b for b in range(256) if f"<0x{b:02X}>" not in vocab and not (0 < b < 128 and chr(b) in vocab)]


def check_spm_vocab(r, path, n, special):
    """A sentencepiece-style (byte_fallback) vocabulary → llama.cpp SPM with
    merge-rank scores; the byte tokens it lacks follow the model's n rows
    (docs/gguf.md, "Vocabulary"). Returns those bytes."""
    tok = tokenizers.Tokenizer.from_file(path)
    tj = json.load(open(path))
    vocab = tj["model"]["vocab"]
    pad = missing_bytes(vocab)
    tokens = kv(r, "tokenizer.ggml.tokens")
    check(len(tokens) == n + len(pad), f"{len(tokens)} tokens for {n} rows and {len(pad)} missing bytes")
    check(kv(r, "llama.vocab_size") == len(tokens), f"llama.vocab_size {kv(r, 'llama.vocab_size')}")
    # get_vocab, as llama.cpp's converter reads it (id_to_token gives normalized
    # added tokens with their normalizer applied: "▁<unk>")
    by_id = {i: s for s, i in tok.get_vocab(with_added_tokens=True).items()}
    check(tokens[:n] == [by_id.get(i, f"[PAD{i}]") for i in range(n)], "tokens differ from tokenizer.json's vocabulary")
    check(tokens[n:] == [f"<0x{b:02X}>" for b in pad], f"padded byte tokens {tokens[n:n + 4]}...")
    types = list(kv(r, "tokenizer.ggml.token_type"))
    want_types = [5 if i not in by_id else 3 if i in special else
                  6 if tokens[i].startswith("<0x") and len(tokens[i]) == 6 else 1 for i in range(n)] + [6] * len(pad)
    check(types == want_types, "token types")
    check(kv(r, "tokenizer.ggml.add_space_prefix") is True, "HF puts a \u2581 before the text")
    merges = tj["model"]["merges"]
    check(kv(r, "tokenizer.ggml.model") == "llama" and kv(r, "tokenizer.ggml.pre") == "default", "SPM")
    check("tokenizer.ggml.merges" not in r.fields, "SPM has no merges")
    scores = [float(-len(merges))] * n
    for rank in reversed(range(len(merges))):
        a_, b_ = merges[rank].split(" ") if isinstance(merges[rank], str) else merges[rank]
        if a_ + b_ in vocab:
            scores[vocab[a_ + b_]] = float(-rank)
    for i in range(n):
        if i not in by_id:
            scores[i] = -1000.0
    got = list(kv(r, "tokenizer.ggml.scores"))
    check(got[:n] == scores, "scores are not minus the merge ranks")
    check(all(g < min(scores) for g in got[n:]), "padded byte tokens must score below every piece")
    return pad


def check_padded_rows(r, name, ref, n_pad, unk):
    """GGUF tensor `name` is the checkpoint's [vocab, hidden] `ref` followed by
    n_pad copies of row `unk` (zeros when unk is None)."""
    t = {t.name: t for t in r.tensors}[name]
    rows, hidden = ref.shape
    check(list(t.shape) == [hidden, rows + n_pad], f"{name}: shape {list(t.shape)}, expected [{hidden}, {rows + n_pad}]")
    data = np.asarray(t.data).reshape(rows + n_pad, hidden)
    check(np.array_equal(data[:rows], ref), f"{name}: the model's rows")
    want = np.zeros(hidden, ref.dtype) if unk is None else ref[unk]
    check(n_pad > 0 and (data[rows:] == want).all(), f"{name}: padded rows are not copies of row {unk}")
    check(unk is None or np.abs(want).max() > 0, f"{name}: the copied row is zero, the test proves nothing")


def test_tinystories():
    cfg = json.load(open(os.path.join(MODEL, "config.json")))
    a, npy = os.path.join(TMP, "a.gguf"), os.path.join(TMP, "npy_a")
    os.makedirs(npy)
    p = tool("--model", MODEL, "--out", a, "--npy", npy, "--ranks", 2)
    print(p.stdout.strip())
    check(not os.path.exists(a + ".partial"), "partial file left behind")
    r = GGUFReader(a)

    # ---- metadata
    U32, F32 = GGUFValueType.UINT32, GGUFValueType.FLOAT32
    want = {
        "general.architecture": "llama", "general.name": "tinystories-656K", "general.alignment": 32,
        "general.file_type": 2, "general.quantization_version": 2,
        "llama.context_length": cfg["max_position_embeddings"], "llama.embedding_length": cfg["hidden_size"],
        "llama.block_count": cfg["num_hidden_layers"], "llama.feed_forward_length": cfg["intermediate_size"],
        "llama.attention.head_count": cfg["num_attention_heads"],
        "llama.attention.head_count_kv": cfg["num_key_value_heads"],
        "llama.rope.dimension_count": cfg["hidden_size"] // cfg["num_attention_heads"],
        "llama.vocab_size": cfg["vocab_size"] + 179,  # + the byte tokens llama.cpp needs (below)
        "llama.rope.freq_base": float(np.float32(cfg["rope_theta"])),
        "llama.attention.layer_norm_rms_epsilon": float(np.float32(cfg["rms_norm_eps"])),
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.add_space_prefix": True,
        "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.padding_token_id": 0,
        "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": False,
    }
    for k, v in want.items():
        got = kv(r, k)
        check(got == v, f"{k}: {got!r}, expected {v!r}")
    for k in ("general.alignment", "general.file_type", "llama.block_count", "llama.vocab_size",
              "tokenizer.ggml.bos_token_id"):
        check(vtype(r, k) == U32, f"{k}: type {vtype(r, k)}")
    for k in ("llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon"):
        check(vtype(r, k) == F32, f"{k}: type {vtype(r, k)}")
    check(r.alignment == 32, "reader alignment")

    # ---- tokenizer: byte_fallback without <0xXX> tokens → SPM + the missing byte tokens
    pad = check_spm_vocab(r, os.path.join(MODEL, "tokenizer.json"), cfg["vocab_size"], {0, 1, 2})
    check(len(pad) == 179 and 0x09 in pad and 0x28 in pad and all(b in pad for b in range(0x80, 0x100)),
          f"tinystories-656K lacks tab, '(' and every non-ASCII byte: {len(pad)} bytes")
    warn = [line for line in p.stderr.splitlines() if "warning" in line]
    check(len(warn) == 1 and all(w in warn[0] for w in ("179 byte tokens", "2048-2226", "<unk>'s (id 0)")),
          f"vocabulary warning: {p.stderr}")

    # ---- tensors
    tensors = {t.name: t for t in r.tensors}
    names = {"token_embd.weight", "output_norm.weight"}
    for layer in range(cfg["num_hidden_layers"]):
        names |= {f"blk.{layer}.{g}.weight" for g in list(ROLES) + ["attn_norm", "ffn_norm"]}
    check(set(tensors) == names, f"tensor names: {sorted(set(tensors) ^ names)}")  # tied: no output.weight
    worst = check_linears(r, npy, cfg, QT.Q4_0)
    ref = load_file(os.path.join(MODEL, "model.f32.safetensors"))
    emb = ref["lm_head.weight"]  # stored once; model.embed_tokens.weight is its alias
    check(tensors["token_embd.weight"].tensor_type == QT.F32, "token_embd type")
    check_padded_rows(r, "token_embd.weight", emb, len(pad), 0)  # tied: llama.cpp's output is this matrix
    check(np.array_equal(np.asarray(tensors["output_norm.weight"].data), ref["model.norm.weight"]), "output_norm")
    for layer in range(cfg["num_hidden_layers"]):
        for g, hf in (("attn_norm", "input_layernorm"), ("ffn_norm", "post_attention_layernorm")):
            t = tensors[f"blk.{layer}.{g}.weight"]
            check(t.tensor_type == QT.F32, f"{t.name} type")
            check(np.array_equal(np.asarray(t.data), ref[f"model.layers.{layer}.{hf}.weight"]), f"{t.name} values")
    # qshard's quantized weights are close to the originals (the .npy are not garbage)
    w = ref["model.layers.0.self_attn.q_proj.weight"]
    q = np.load(os.path.join(npy, "model.layers.0.self_attn.q_proj.weight.npy"))
    check(np.abs(q - w).max() < 0.1 * np.abs(w).max() + 1e-6, "quantized q_proj far from the original")

    # ---- byte-identical: 1 rank, reversed block order, f32 input
    data = open(a, "rb").read()
    for extra in (["--ranks", 1], ["--ranks", 2, "--reverse"], ["--ranks", 1, "--file", "model.f32.safetensors"]):
        b = os.path.join(TMP, "b.gguf")
        tool("--model", MODEL, "--out", b, *extra)
        check(open(b, "rb").read() == data, f"GGUF differs with {extra}")
    print(f"Q4_0: {len(data)} bytes, byte-identical across ranks/order/input dtype; worst {worst}")

    # ---- Q8_0 and Q4_1
    for bits, args, qt in ((8, [], QT.Q8_0), (4, ["--asym"], QT.Q4_1)):
        out, d = os.path.join(TMP, f"{qt.name}.gguf"), os.path.join(TMP, f"npy_{qt.name}")
        os.makedirs(d)
        tool("--model", MODEL, "--out", out, "--npy", d, "--bits", bits, *args, "--ranks", 2)
        r2 = GGUFReader(out)
        check(kv(r2, "general.file_type") == {QT.Q8_0: 7, QT.Q4_1: 3}[qt], "file_type")
        worst = check_linears(r2, d, cfg, qt, exact=qt != QT.Q4_1)
        print(f"{qt.name}: ok, worst |gguf - qshard| / d = {worst:.3g}")

    # ---- GPTQ with act-order: exact with static groups, refused or F16 without
    out, d = os.path.join(TMP, "ao.gguf"), os.path.join(TMP, "npy_ao")
    os.makedirs(d)
    gptq = ["--method", "gptq", "--hessian", "random", "--act-order"]
    tool("--model", MODEL, "--out", out, "--npy", d, *gptq, "--static-groups")
    check_linears(GGUFReader(out), d, cfg, QT.Q4_0)
    p = tool("--model", MODEL, "--out", out, *gptq, expect=1)
    check("act-order" in p.stderr and "q_proj" in p.stderr, f"act-order refusal message: {p.stderr}")
    d2 = os.path.join(TMP, "npy_ao2")
    os.makedirs(d2)
    tool("--model", MODEL, "--out", out, "--npy", d2, *gptq, "--fallback-f16")
    r3 = GGUFReader(out)
    for t in r3.tensors:
        if t.name.startswith("blk.0.ffn_down"):
            check(t.tensor_type == QT.F16, "fallback type")
            want = np.load(os.path.join(d2, "model.layers.0.mlp.down_proj.weight.npy"))
            check(np.array_equal(np.asarray(t.data).reshape(want.shape), want.astype(np.float16)), "F16 fallback values")
    check(kv(r3, "general.file_type") == 2, "fallback file_type stays Q4_0")


def test_hf_tiny_llama3_biases():
    """A llama with q/k/v/o biases, llama3 RoPE scaling and rows of 48 (not a multiple of 32)."""
    model = qstest.source("tests", "fixtures", "hf_tiny", "llama")
    cfg = json.load(open(os.path.join(model, "config.json")))
    out = os.path.join(TMP, "tiny.gguf")
    p = tool("--model", model, "--out", out, expect=1)
    check("down_proj" in p.stderr and "48" in p.stderr, f"refusal message: {p.stderr}")
    d = os.path.join(TMP, "npy_tiny")
    os.makedirs(d)
    tool("--model", model, "--out", out, "--npy", d, "--group", -1, "--fallback-f16", "--embed-f16")
    r = GGUFReader(out)
    tensors = {t.name: t for t in r.tensors}
    ref = load_file(os.path.join(model, "model.safetensors"))
    hd = cfg["head_dim"]
    for layer in range(2):
        for g, hf in (("attn_q", "q_proj"), ("attn_k", "k_proj"), ("attn_v", "v_proj"), ("attn_output", "o_proj")):
            t = tensors[f"blk.{layer}.{g}.bias"]
            b = ref[f"model.layers.{layer}.self_attn.{hf}.bias"]
            heads = {"attn_q": cfg["num_attention_heads"], "attn_k": cfg["num_key_value_heads"]}.get(g)
            want = hf_to_gguf(b, heads) if heads else b
            check(t.tensor_type == QT.F32 and np.array_equal(np.asarray(t.data), want), f"{t.name}")
        check(tensors[f"blk.{layer}.ffn_down.weight"].tensor_type == QT.F16, "down_proj fell back to F16")
        check(tensors[f"blk.{layer}.attn_q.weight"].tensor_type == QT.Q4_0, "q_proj Q4_0")
    check_linears(r, d, cfg, QT.Q4_0, roles={g: h for g, h in ROLES.items() if g != "ffn_down"})
    for layer in range(2):
        t = tensors[f"blk.{layer}.ffn_down.weight"]
        want = np.load(os.path.join(d, f"model.layers.{layer}.mlp.down_proj.weight.npy"))
        check(np.array_equal(np.asarray(t.data).reshape(want.shape), want.astype(np.float16)), "F16 fallback values")
    for name, hf in (("token_embd.weight", "model.embed_tokens.weight"), ("output.weight", "lm_head.weight")):
        t = tensors[name]
        check(t.tensor_type == QT.F16, f"{name}: F16 with --embed-f16")
        check(np.array_equal(np.asarray(t.data).reshape(ref[hf].shape), ref[hf].astype(np.float16)), name)
    # llama3 rope factors, from the formula in transformers' _compute_llama3_parameters
    rs = cfg["rope_scaling"]
    freqs = 1.0 / (cfg["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    wl = 2 * np.pi / freqs
    lo_wl, hi_wl = rs["original_max_position_embeddings"] / rs["low_freq_factor"], \
        rs["original_max_position_embeddings"] / rs["high_freq_factor"]
    smooth = (rs["original_max_position_embeddings"] / wl - rs["low_freq_factor"]) / \
        (rs["high_freq_factor"] - rs["low_freq_factor"])
    want = np.where(wl < hi_wl, 1.0, np.where(wl > lo_wl, rs["factor"], 1 / ((1 - smooth) / rs["factor"] + smooth)))
    got = np.asarray(tensors["rope_freqs.weight"].data)
    check(np.allclose(got, want, rtol=1e-6), f"rope_freqs {got} vs {want}")
    check(kv(r, "llama.attention.head_count_kv") == 2 and kv(r, "llama.rope.dimension_count") == hd, "heads")
    check(kv(r, "tokenizer.ggml.model") == "no_vocab", "no tokenizer.json → no_vocab")


def synth_model():
    model = os.path.join(TMP, "synth")
    if not os.path.exists(model):
        qstest.run(["synth", "--arch", "llama", "--layers", 1, "--hidden", 64, "--heads", 4, "--kv-heads", 2,
                    "--ffn", 128, "--vocab", 2048, "--out", model])
    return model


def test_spm_vocab():
    """Sentencepiece-style fixture (metaspace.json: byte_fallback, all 256 byte
    tokens) → llama.cpp SPM, nothing padded; the same less <0x80> → <0x80>
    appended, its token_embd and output rows (the synthetic llama is untied)
    copies of unk_token's (here "</s>", to tell it from row 0), or zeros
    without an unk_token; the warning names what llama.cpp does differently."""
    model = synth_model()
    ref = load_file(os.path.join(model, "model.safetensors"))
    path = qstest.source("tests", "fixtures", "tokenizers", "metaspace.json")
    tj = json.load(open(path))
    special = {a["id"] for a in tj["added_tokens"] if a["special"]}
    out = os.path.join(TMP, "spm.gguf")
    p = tool("--model", model, "--out", out, "--tokenizer", path)
    r = GGUFReader(out)
    check(check_spm_vocab(r, path, 2048, special) == [], "metaspace.json has every byte token")
    check(list({t.name: t for t in r.tensors}["token_embd.weight"].shape) == [64, 2048], "nothing padded")
    warn = [line for line in p.stderr.splitlines() if "warning" in line]
    check(len(warn) == 1 and all(w in warn[0] for w in ("normalizer Replace", "normalizer Strip", "pre-tokenizer Digits"))
          and "byte tokens" not in warn[0], f"metaspace warning: {p.stderr}")
    del tj["model"]["vocab"]["<0x80>"]
    tj["model"]["unk_token"] = "</s>"
    for unk in (2, None):
        cut = os.path.join(TMP, f"metaspace-no-0x80-{unk}.json")
        json.dump(tj, open(cut, "w"))
        p = tool("--model", model, "--out", out, "--tokenizer", cut)
        r = GGUFReader(out)
        check(check_spm_vocab(r, cut, 2048, special) == [0x80], "<0x80> appended")
        check_padded_rows(r, "token_embd.weight", ref["model.embed_tokens.weight"], 1, unk)
        check_padded_rows(r, "output.weight", ref["lm_head.weight"], 1, unk)
        warn = [line for line in p.stderr.splitlines() if "warning" in line]
        rows = "copies of <unk>'s (id 2)" if unk is not None else "zeros (no model.unk_token"
        check(len(warn) == 1 and "1 byte tokens appended as ids 2048-2048" in warn[0] and rows in warn[0]
              and "can merge" not in warn[0], f"no-<0x80> warning: {p.stderr}")
        tj["model"]["unk_token"] = None
    # a vocabulary with pieces that spell "<0x80>" ("<0x8" + "0>"): llama.cpp's
    # SPM could merge such text into the byte token, and the warning says so
    tj["model"]["vocab"].update({"<0x8": 1456, "0>": 1457})
    json.dump(tj, open(cut, "w"))
    p = tool("--model", model, "--out", out, "--tokenizer", cut)
    check("text spelling <0x80> (and 0 more) can merge into that byte token" in p.stderr, f"spelling: {p.stderr}")


def test_gpt2_vocab():
    """Byte-level BPE tokenizers (fixtures) on a synthetic llama: gpt2 vocabulary with merges."""
    model = synth_model()
    for fixture, pre in (("llama3ish.json", "llama-bpe"), ("bytelevel.json", "gpt-2")):
        path = qstest.source("tests", "fixtures", "tokenizers", fixture)
        out = os.path.join(TMP, f"v-{fixture}.gguf")
        tool("--model", model, "--out", out, "--tokenizer", path)
        r = GGUFReader(out)
        check(kv(r, "tokenizer.ggml.model") == "gpt2", "gpt2 model")
        check(kv(r, "tokenizer.ggml.pre") == pre, f"{fixture}: pre {kv(r, 'tokenizer.ggml.pre')}")
        check("tokenizer.ggml.scores" not in r.fields, "gpt2 has no scores")
        tok = tokenizers.Tokenizer.from_file(path)
        by_id = {i: s for s, i in tok.get_vocab(with_added_tokens=True).items()}
        tj = json.load(open(path))
        tokens = kv(r, "tokenizer.ggml.tokens")
        check(len(tokens) == 2048, "padded to the embedding's rows")
        for i in range(2048):
            check(tokens[i] == by_id.get(i, f"[PAD{i}]"), f"{fixture}: token {i}: {tokens[i]!r}")
        types = list(kv(r, "tokenizer.ggml.token_type"))
        added = {a["id"]: a for a in tj["added_tokens"]}
        for i in range(2048):
            # the converter: added tokens are control when special or when they look
            # special (<|...|>, <pad>, <mask>), user-defined otherwise
            looks = i in added and (added[i]["content"] in ("<pad>", "<mask>") or
                                    (added[i]["content"].startswith("<|") and added[i]["content"].endswith("|>")))
            want = 5 if i not in by_id else (3 if added[i]["special"] or looks else 4) if i in added else 1
            check(types[i] == want, f"{fixture}: type of {i} is {types[i]}, expected {want}")
        merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
        check(kv(r, "tokenizer.ggml.merges") == merges, f"{fixture}: merges")
    p = tool("--model", qstest.source("tests", "fixtures", "hf_tiny", "opt"), "--out", os.path.join(TMP, "opt.gguf"),
             expect=1)
    check("opt" in p.stderr and "llama" in p.stderr, f"opt refusal: {p.stderr}")


if __name__ == "__main__":
    if not os.path.exists(TOOL):
        qstest.skip(f"{TOOL} is not built")
    test_tinystories()
    test_hf_tiny_llama3_biases()
    test_gpt2_vocab()
    test_spm_vocab()
    print("ok")
