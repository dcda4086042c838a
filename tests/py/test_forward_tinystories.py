"""tinystories-656K (a real HF Llama): `qshard eval` NLL agrees with a plain
NumPy float64 implementation of the HF Llama forward written here, for the
bf16 model.safetensors and the f32 model.f32.safetensors; greedy decoding from
BOS writes "Once upon a time, there was a little girl named Lily." (decoded
with the PyPI `tokenizers` library, independent of qshard's tokenizer).

Tokens: the first paragraphs of the shared TinyStories text, each encoded with
PyPI `tokenizers` as [BOS] + pieces without the leading "▁" (how the model was
trained, see ../shared/models/README.md), concatenated and cut into rows.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qstest  # noqa: E402

ROWS, L = 6, 128


def load_weights(path):
    """safetensors → dict of float64 arrays (bf16 widened by bit shifting, so
    no library's bf16 support is relied on)."""
    import numpy as np
    from safetensors import safe_open
    out = {}
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        base = 8 + n
        for name, info in header.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            f.seek(base + b)
            raw = f.read(e - b)
            if info["dtype"] == "BF16":
                a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            elif info["dtype"] == "F32":
                a = np.frombuffer(raw, dtype="<f4")
            elif info["dtype"] == "F16":
                a = np.frombuffer(raw, dtype="<f2")
            else:
                raise AssertionError(f"{path}: {name}: unexpected dtype {info['dtype']}")
            out[name] = a.astype(np.float64).reshape(info["shape"])
    # cross-check the hand-rolled reader against the safetensors library on F32 files
    with safe_open(path, "np") as f:
        for name in f.keys():
            t = f.get_slice(name)
            if t.get_dtype() == "F32":
                assert np.array_equal(f.get_tensor(name).astype(np.float64), out[name]), name
    return out


def llama_forward(w, cfg, ids):
    """HF LlamaForCausalLM logits for one unpadded sequence, float64."""
    import numpy as np
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or H // nh
    eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)
    pre = "model."
    emb = w.get(pre + "embed_tokens.weight")
    if emb is None:
        emb = w["lm_head.weight"]
    head = w.get("lm_head.weight", emb)

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        if name + ".bias" in w:
            y = y + w[name + ".bias"]
        return y

    L_ = len(ids)
    inv_freq = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    ang = np.arange(L_)[:, None] * inv_freq[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]

    def rope(x):  # x [L, heads, hd]; rotate_half(x) = cat(-x2, x1)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + np.concatenate([-x2, x1], -1) * sin

    mask = np.triu(np.full((L_, L_), -np.inf), 1)
    x = emb[np.asarray(ids)]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"{pre}layers.{layer}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rope(lin(h, p + "self_attn.q_proj").reshape(L_, nh, hd))
        k = rope(lin(h, p + "self_attn.k_proj").reshape(L_, nkv, hd))
        v = lin(h, p + "self_attn.v_proj").reshape(L_, nkv, hd)
        k = np.repeat(k, nh // nkv, axis=1)
        v = np.repeat(v, nh // nkv, axis=1)
        s = np.einsum("ihd,jhd->hij", q, k) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("hij,jhd->ihd", s, v).reshape(L_, nh * hd)
        x = x + lin(o, p + "self_attn.o_proj")
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = lin(h, p + "mlp.gate_proj")
        x = x + lin(g / (1 + np.exp(-g)) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
    return rms(x, w[pre + "norm.weight"]) @ head.T


def nll_of(logits, ids):
    import numpy as np
    z = logits[:-1]
    m = z.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[:, 0]
    return lse - z[np.arange(len(ids) - 1), np.asarray(ids[1:])]


def story_tokens(tokenizer_json, text_path, rows, seq):
    """[rows, seq] int32: [BOS] + pieces of each paragraph, concatenated."""
    import numpy as np
    from tokenizers import Tokenizer, normalizers
    tok = Tokenizer.from_file(tokenizer_json)
    tok.normalizer = normalizers.Replace(" ", "\u2581")  # the model's training text had no leading "▁"
    paras = [p.strip() for p in open(text_path, encoding="utf-8").read().split("\n\n") if p.strip()]
    stream = []
    for p in paras:
        stream += [1] + tok.encode(p, add_special_tokens=False).ids
        if len(stream) >= rows * seq:
            break
    return np.asarray(stream[: rows * seq], dtype=np.int32).reshape(rows, seq)


def main():
    np = qstest.need("numpy")
    qstest.need("safetensors")
    qstest.need("tokenizers")
    from tokenizers import Tokenizer
    model = qstest.shared("models", "tinystories-656K")
    text = qstest.shared("text", "tinystories_valid_head.txt")
    cfg = json.load(open(os.path.join(model, "config.json")))
    tmp = qstest.tmpdir()
    toks = story_tokens(os.path.join(model, "tokenizer.json"), text, ROWS, L)
    tpath = os.path.join(tmp, "tokens.npy")
    np.save(tpath, toks)

    tokenizer = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
    for fname in ("model.safetensors", "model.f32.safetensors"):
        w = load_weights(os.path.join(model, fname))
        ref = np.concatenate([nll_of(llama_forward(w, cfg, row), row) for row in toks.tolist()])
        ref_nll = ref.mean()
        # the f32 forward against float64 NumPy (bf16 compute is tested in test_run_bf16)
        p = qstest.run(["eval", "--model", model, "--file", fname, "--tokens", tpath, "--json", "--batch", "4",
                        "--compute-dtype", "f32"])
        got = json.loads(p.stdout)
        print(f"{fname}: qshard nll {got['nll']:.8f}  numpy {ref_nll:.8f}  tokens {got['tokens']}  "
              f"{got['tokens_per_s']:.0f} tok/s")
        qstest.check(got["tokens"] == ROWS * (L - 1), f"tokens {got['tokens']} != {ROWS * (L - 1)}")
        qstest.check(abs(got["nll"] - ref_nll) <= 1e-4 * ref_nll, f"{fname}: nll {got['nll']} vs {ref_nll}")
        qstest.check(abs(got["ppl"] - np.exp(ref_nll)) <= 1e-4 * np.exp(ref_nll), f"ppl {got['ppl']}")
        qstest.check(2.0 < ref_nll < 5.0, f"reference NLL {ref_nll} is not plausible for this model")

        # greedy continuation from BOS
        p = qstest.run(["eval", "--model", model, "--file", fname, "--generate", "24", "--json"])
        ids = json.loads(p.stdout)["ids"]
        qstest.check(ids[0] == 1, f"generation does not start with BOS: {ids[:4]}")
        story = tokenizer.decode(ids[1:])
        print(f"{fname}: {story!r}")
        want = "Once upon a time, there was a little girl named Lily."
        qstest.check(story.startswith(want), f"{fname}: greedy text {story!r} does not begin {want!r}")
        # the greedy ids are the argmax of the NumPy reference too
        ref_logits = llama_forward(w, cfg, ids[:-1])
        qstest.check(list(ref_logits.argmax(-1)[: len(ids) - 1]) == ids[1:], "greedy ids differ from NumPy argmax")

    # the default file (model.safetensors) is used without --file
    p = qstest.run(["eval", "--model", model, "--tokens", tpath])
    qstest.check("perplexity" in p.stdout and "tokens/s" in p.stdout, p.stdout)
    print("ok")


if __name__ == "__main__":
    main()
