"""`qshard convert --from llama2c`: the converted HF directory computes the
same function as the llama2.c checkpoint.

Two forward passes written here in NumPy from their definitions: llama2.c's
run.c (interleaved RoPE pairs, w1/w2/w3) on the original .bin, and HF Llama's
(rotate-half RoPE, gate/up/down) on the converted safetensors, read with the
PyPI safetensors library. Their logits must agree, and greedy decoding of the
converted stories260K must give Karpathy's published story. Also checked:
config.json fields, 260,032 parameters (the RoPE table dropped), each tensor
against the .bin (wq/wk through HF's own permute formula), an untied
(negative vocab_size) checkpoint, and error exits.
"""
import json
import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qstest  # noqa: E402

np = qstest.need("numpy")
qstest.need("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

TMP = qstest.tmpdir("qs-convert-")


# ---- llama2.c side ------------------------------------------------------------------------

def read_llama2c(path):
    data = open(path, "rb").read()
    dim, hidden, L, H, KV, vocab, seq = struct.unpack("<7i", data[:28])
    shared = vocab > 0
    V = abs(vocab)
    hs = dim // H
    kvd = KV * hs
    f = np.frombuffer(data, "<f4", offset=28)
    parts = [("tok", (V, dim)), ("rms_att", (L, dim)), ("wq", (L, dim, dim)), ("wk", (L, kvd, dim)),
             ("wv", (L, kvd, dim)), ("wo", (L, dim, dim)), ("rms_ffn", (L, dim)), ("w1", (L, hidden, dim)),
             ("w2", (L, dim, hidden)), ("w3", (L, hidden, dim)), ("rms_final", (dim,)),
             ("freq_real", (seq, hs // 2)), ("freq_imag", (seq, hs // 2))]
    if not shared:
        parts.append(("wcls", (V, dim)))
    w, off = {}, 0
    for name, shape in parts:
        n = int(np.prod(shape))
        w[name] = f[off:off + n].reshape(shape)
        off += n
    qstest.check(off == f.size, f"{path}: {f.size - off} floats left over")
    w.update(dim=dim, hidden=hidden, L=L, H=H, KV=KV, V=V, seq=seq, shared=shared, hs=hs)
    if shared:
        w["wcls"] = w["tok"]
    return w


def write_llama2c(path, dim, hidden, L, H, KV, V, seq, shared, rng):
    hs = dim // H
    arrays = [rng.normal(0, 0.5, (V, dim)), 1 + 0.1 * rng.normal(size=(L, dim)),
              rng.normal(0, dim ** -0.5, (L, dim, dim)), rng.normal(0, dim ** -0.5, (L, KV * hs, dim)),
              rng.normal(0, dim ** -0.5, (L, KV * hs, dim)), rng.normal(0, dim ** -0.5, (L, dim, dim)),
              1 + 0.1 * rng.normal(size=(L, dim)), rng.normal(0, dim ** -0.5, (L, hidden, dim)),
              rng.normal(0, hidden ** -0.5, (L, dim, hidden)), rng.normal(0, dim ** -0.5, (L, hidden, dim)),
              1 + 0.1 * rng.normal(size=(dim,)), rng.normal(size=(seq, hs // 2)), rng.normal(size=(seq, hs // 2))]
    if not shared:
        arrays.append(rng.normal(0, 0.5, (V, dim)))
    with open(path, "wb") as f:
        f.write(struct.pack("<7i", dim, hidden, L, H, KV, V if shared else -V, seq))
        for a in arrays:
            f.write(a.astype("<f4").tobytes())


def rms(x, g, eps=1e-5):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g


def rope_interleaved(x, hs):
    """run.c: pairs (2j, 2j+1) of each head turn by pos * 10000^(-2j/hs). x: [T, heads, hs]."""
    T = x.shape[0]
    j = np.arange(hs // 2)
    ang = np.arange(T)[:, None] * (1.0 / 10000.0 ** (2 * j / hs))[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def rope_rotate_half(x, hs):
    """transformers' apply_rotary_pos_emb: q*cos + rotate_half(q)*sin, cos = cat(freqs, freqs)."""
    T = x.shape[0]
    inv = 1.0 / 10000.0 ** (np.arange(0, hs, 2) / hs)
    freqs = np.arange(T)[:, None] * inv[None, :]
    emb = np.concatenate([freqs, freqs], -1)
    c, s = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]
    rot = np.concatenate([-x[..., hs // 2:], x[..., :hs // 2]], -1)
    return x * c + rot * s


def forward(tokens, layers, emb, final_norm, head, H, KV, rope, eps):
    """Causal decoder; layers: list of dicts with attn_norm, q, k, v, o, mlp_norm, gate, up, down ([out, in])."""
    x = emb[tokens].astype(np.float64)
    T, D = x.shape
    hs = D // H
    group = H // KV
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for lw in layers:
        h = rms(x, lw["attn_norm"], eps)
        q = rope((h @ lw["q"].T).reshape(T, H, hs), hs)
        k = rope((h @ lw["k"].T).reshape(T, KV, hs), hs)
        v = (h @ lw["v"].T).reshape(T, KV, hs)
        att = np.empty((T, H, hs))
        for i in range(H):
            sc = q[:, i] @ k[:, i // group].T / np.sqrt(hs) + mask
            p = np.exp(sc - sc.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            att[:, i] = p @ v[:, i // group]
        x = x + att.reshape(T, D) @ lw["o"].T
        h = rms(x, lw["mlp_norm"], eps)
        g = h @ lw["gate"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ lw["up"].T)) @ lw["down"].T
    return rms(x, final_norm, eps) @ head.T


def l2c_forward(w, tokens):
    layers = [dict(attn_norm=w["rms_att"][i], q=w["wq"][i], k=w["wk"][i], v=w["wv"][i], o=w["wo"][i],
                   mlp_norm=w["rms_ffn"][i], gate=w["w1"][i], up=w["w3"][i], down=w["w2"][i]) for i in range(w["L"])]
    return forward(tokens, layers, w["tok"], w["rms_final"], w["wcls"], w["H"], w["KV"], rope_interleaved, 1e-5)


def hf_forward(d, tokens):
    cfg = json.load(open(os.path.join(d, "config.json")))
    t = {k: v.astype(np.float64) for k, v in load_file(os.path.join(d, "model.safetensors")).items()}
    emb = t["model.embed_tokens.weight"]
    head = emb if cfg["tie_word_embeddings"] else t["lm_head.weight"]
    layers = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        layers.append(dict(attn_norm=t[p + "input_layernorm.weight"], q=t[p + "self_attn.q_proj.weight"],
                           k=t[p + "self_attn.k_proj.weight"], v=t[p + "self_attn.v_proj.weight"],
                           o=t[p + "self_attn.o_proj.weight"], mlp_norm=t[p + "post_attention_layernorm.weight"],
                           gate=t[p + "mlp.gate_proj.weight"], up=t[p + "mlp.up_proj.weight"],
                           down=t[p + "mlp.down_proj.weight"]))
    return forward(tokens, layers, emb, t["model.norm.weight"], head, cfg["num_attention_heads"],
                   cfg["num_key_value_heads"], rope_rotate_half, cfg["rms_norm_eps"])


def hf_permute(w, heads):
    """transformers' convert_llama_weights_to_hf.permute (Meta interleaved → HF rotate-half)."""
    out, d_in = w.shape
    return w.reshape(heads, out // heads // 2, 2, d_in).transpose(0, 2, 1, 3).reshape(out, d_in)


def check_tensors(d, w):
    t = load_file(os.path.join(d, "model.safetensors"))
    want = {"model.embed_tokens.weight": w["tok"], "model.norm.weight": w["rms_final"]}
    if not w["shared"]:
        want["lm_head.weight"] = w["wcls"]
    for i in range(w["L"]):
        p = f"model.layers.{i}."
        want.update({p + "input_layernorm.weight": w["rms_att"][i],
                     p + "post_attention_layernorm.weight": w["rms_ffn"][i],
                     p + "self_attn.q_proj.weight": hf_permute(w["wq"][i], w["H"]),
                     p + "self_attn.k_proj.weight": hf_permute(w["wk"][i], w["KV"]),
                     p + "self_attn.v_proj.weight": w["wv"][i], p + "self_attn.o_proj.weight": w["wo"][i],
                     p + "mlp.gate_proj.weight": w["w1"][i], p + "mlp.up_proj.weight": w["w3"][i],
                     p + "mlp.down_proj.weight": w["w2"][i]})
    qstest.check(set(t) == set(want), f"{d}: tensors {sorted(set(t) ^ set(want))[:6]} differ")
    for k, v in want.items():
        qstest.check(t[k].dtype == np.float32 and t[k].shape == v.shape, f"{k}: {t[k].dtype} {t[k].shape}")
        qstest.check(np.array_equal(t[k], v), f"{k}: values differ from the .bin")
    return sum(v.size for v in t.values())


def decode(tok_path, ids):
    data = open(tok_path, "rb").read()
    off, pieces = 4, []
    while off < len(data):
        _, n = struct.unpack_from("<fi", data, off)
        pieces.append(data[off + 8:off + 8 + n])
        off += 8 + n
    out = b""
    for prev, i in zip([1] + ids, ids):
        p = pieces[i]
        if prev == 1 and p.startswith(b" "):
            p = p[1:]
        if 3 <= i <= 258:
            p = bytes([i - 3])
        out += p
    return out.decode("utf-8", "replace")


def test_stories260k():
    src = qstest.shared("models", "stories260K", "stories260K.bin")
    out = os.path.join(TMP, "stories")
    p = qstest.run(["convert", "--from", "llama2c", src, "--out", out,
                    "--tokenizer", os.path.join(os.path.dirname(src), "tok512.bin")])
    print(p.stdout.strip())
    cfg = json.load(open(os.path.join(out, "config.json")))
    want = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
            "intermediate_size": 172, "num_hidden_layers": 5, "num_attention_heads": 8, "num_key_value_heads": 4,
            "vocab_size": 512, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000,
            "tie_word_embeddings": True, "torch_dtype": "float32", "hidden_act": "silu", "rope_scaling": None}
    for k, v in want.items():
        qstest.check(cfg.get(k) == v, f"config.json {k} = {cfg.get(k)!r}, want {v!r}")
    w = read_llama2c(src)
    n = check_tensors(out, w)
    qstest.check(n == 260032, f"{n} parameters, the README says 260,032")
    with safe_open(os.path.join(out, "model.safetensors"), "np") as f:
        qstest.check(f.metadata().get("format") == "pt", "metadata lacks format=pt")

    # same logits on a real prefix
    rng = np.random.default_rng(0)
    tokens = [1] + rng.integers(3, 512, 40).tolist()
    a, b = l2c_forward(w, tokens), hf_forward(out, tokens)
    diff = np.abs(a - b).max()
    print(f"stories260K: max |logit difference| llama2.c vs converted HF = {diff:.2e} (logit scale {np.abs(a).max():.1f})")
    qstest.check(diff < 1e-6, f"logits differ by {diff}")
    # the converted model tells Karpathy's story (greedy from BOS)
    ids = [1]
    for _ in range(24):
        ids.append(int(hf_forward(out, ids)[-1].argmax()))
    text = decode(os.path.join(os.path.dirname(src), "tok512.bin"), ids[1:])
    print(f"greedy: {text!r}")
    qstest.check(text.startswith("Once upon a time, there was a little girl named Lily."), f"greedy text {text!r}")
    # re-running into the same directory is fine and gives the same bytes
    first = open(os.path.join(out, "model.safetensors"), "rb").read()
    qstest.run(["convert", "--from", "llama2c", src, "--out", out])
    qstest.check(open(os.path.join(out, "model.safetensors"), "rb").read() == first, "second conversion differs")


def test_untied_random():
    """Negative vocab_size: own classifier; another head size and GQA ratio."""
    rng = np.random.default_rng(1)
    src = os.path.join(TMP, "untied.bin")
    write_llama2c(src, dim=48, hidden=80, L=2, H=3, KV=1, V=37, seq=16, shared=False, rng=rng)
    out = os.path.join(TMP, "untied")
    qstest.run(["convert", "--from", "llama2c", src, "--out", out])
    cfg = json.load(open(os.path.join(out, "config.json")))
    qstest.check(cfg["tie_word_embeddings"] is False and cfg["vocab_size"] == 37 and cfg["num_key_value_heads"] == 1
                 and cfg["max_position_embeddings"] == 16, f"config {cfg}")
    w = read_llama2c(src)
    check_tensors(out, w)
    tokens = rng.integers(0, 37, 16).tolist()
    diff = np.abs(l2c_forward(w, tokens) - hf_forward(out, tokens)).max()
    qstest.check(diff < 1e-6, f"untied: logits differ by {diff}")
    # and without the permutation they would not agree (the test can see a wrong layout)
    bad = os.path.join(TMP, "unpermuted")
    shutil.copytree(out, bad)
    t = load_file(os.path.join(bad, "model.safetensors"))
    for i in range(2):
        t[f"model.layers.{i}.self_attn.q_proj.weight"] = np.ascontiguousarray(w["wq"][i])
        t[f"model.layers.{i}.self_attn.k_proj.weight"] = np.ascontiguousarray(w["wk"][i])
    from safetensors.numpy import save_file
    save_file(t, os.path.join(bad, "model.safetensors"))
    qstest.check(np.abs(l2c_forward(w, tokens) - hf_forward(bad, tokens)).max() > 1e-3,
                 "unpermuted weights give the same logits: the test cannot see the permutation")


def test_errors():
    src = qstest.shared("models", "stories260K", "stories260K.bin")
    trunc = os.path.join(TMP, "trunc.bin")
    with open(trunc, "wb") as f:
        f.write(open(src, "rb").read()[:500000])
    cases = [
        (["--from", "llama2c", trunc, "--out", TMP + "/e"], trunc, 2),
        (["--from", "llama2c", TMP + "/missing.bin", "--out", TMP + "/e"], "missing.bin", 2),
        (["--from", "gguf", src, "--out", TMP + "/e"], "gguf", 2),
        ([src, "--out", TMP + "/e"], "--from", 2),
        (["--from", "llama2c", src], "--out", 2),
        (["--from", "llama2c", "--out", TMP + "/e"], "MODEL.bin", 2),
    ]
    for args, frag, rc in cases:
        p = qstest.run(["convert", *args], expect=None)
        lines = p.stderr.strip().splitlines()
        qstest.check(p.returncode == rc, f"convert {args}: exit {p.returncode}, want {rc}")
        qstest.check(len(lines) == 1 and frag in lines[0], f"convert {args}: stderr {p.stderr!r} lacks {frag!r}")
    qstest.check(not os.path.exists(TMP + "/e/model.safetensors"), "a failed conversion left a model behind")


def main():
    try:
        for t in [test_untied_random, test_stories260k, test_errors]:
            t()
            print(f"ok {t.__name__}")
    finally:
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
