"""`qshard synth`: files read back with the PyPI safetensors library and NumPy.

Checks: byte-identical output for identical options; every tensor of each
architecture present with the HF name and shape (the expected lists are
written here from the transformers module layouts); config.json has the
fields transformers' LlamaConfig/OPTConfig/BloomConfig read; f16/bf16 files
equal NumPy's round-to-nearest-even casts of the f32 file; sharded output
(index.json) holds the same tensors as the single file; the outlier channels
of norm(embedding) are ~20x the median channel; peak RSS stays small while
writing a ~480 MB model; bad options exit 2 with one line on stderr.
"""
import json
import os
import resource  # noqa: F401  (os.wait4 returns a resource.struct_rusage)
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qstest  # noqa: E402

np = qstest.need("numpy")
qstest.need("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

TMP = qstest.tmpdir("qs-synth-")


def synth(out, *args):
    qstest.run(["synth", *args, "--out", out])
    return out


def read_raw(path):
    """Independent reader: header JSON + raw bytes (works for BF16, which NumPy lacks)."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        raw = data[8 + n + b:8 + n + e]
        shape = tuple(info["shape"])
        if info["dtype"] == "F32":
            arr = np.frombuffer(raw, "<f4").reshape(shape)
        elif info["dtype"] == "F16":
            arr = np.frombuffer(raw, "<f2").reshape(shape)
        elif info["dtype"] == "BF16":
            arr = np.frombuffer(raw, "<u2").reshape(shape)
        else:
            raise AssertionError(f"{path}: unexpected dtype {info['dtype']} for {name}")
        out[name] = (info["dtype"], arr)
    return out, meta


def files_of(d):
    return sorted(f for f in os.listdir(d) if not f.startswith("."))


def load_dir(d):
    """All tensors of an HF dir (single file or index), via the safetensors library."""
    index = os.path.join(d, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(index):
        wm = json.load(open(index))["weight_map"]
        for f in sorted(set(wm.values())):
            part = load_file(os.path.join(d, f))
            for k in part:
                qstest.check(wm[k] == f, f"index puts {k} in {wm[k]}, found in {f}")
            tensors.update(part)
        qstest.check(set(wm) == set(tensors), "index and shards disagree on the tensor set")
    else:
        tensors = load_file(os.path.join(d, "model.safetensors"))
    return tensors


# ---- expected names, from the HF module layouts ---------------------------------------

def expected_llama(L, D, H, KV, F, V, tie):
    hd = D // H
    e = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
    if not tie:
        e["lm_head.weight"] = (V, D)
    for i in range(L):
        p = f"model.layers.{i}."
        e.update({p + "input_layernorm.weight": (D,), p + "post_attention_layernorm.weight": (D,),
                  p + "self_attn.q_proj.weight": (H * hd, D), p + "self_attn.k_proj.weight": (KV * hd, D),
                  p + "self_attn.v_proj.weight": (KV * hd, D), p + "self_attn.o_proj.weight": (D, H * hd),
                  p + "mlp.gate_proj.weight": (F, D), p + "mlp.up_proj.weight": (F, D),
                  p + "mlp.down_proj.weight": (D, F)})
    return e


def expected_opt(L, D, F, V, P):
    e = {"model.decoder.embed_tokens.weight": (V, D), "model.decoder.embed_positions.weight": (P + 2, D),
         "model.decoder.final_layer_norm.weight": (D,), "model.decoder.final_layer_norm.bias": (D,)}
    for i in range(L):
        p = f"model.decoder.layers.{i}."
        for n, shp in [("self_attn.q_proj", (D, D)), ("self_attn.k_proj", (D, D)), ("self_attn.v_proj", (D, D)),
                       ("self_attn.out_proj", (D, D)), ("fc1", (F, D)), ("fc2", (D, F))]:
            e[p + n + ".weight"] = shp
            e[p + n + ".bias"] = (shp[0],)
        for n in ["self_attn_layer_norm", "final_layer_norm"]:
            e[p + n + ".weight"] = (D,)
            e[p + n + ".bias"] = (D,)
    return e


def expected_bloom(L, D, V):
    e = {"transformer.word_embeddings.weight": (V, D)}
    for n in ["transformer.word_embeddings_layernorm", "transformer.ln_f"]:
        e[n + ".weight"] = (D,)
        e[n + ".bias"] = (D,)
    for i in range(L):
        p = f"transformer.h.{i}."
        for n, shp in [("self_attention.query_key_value", (3 * D, D)), ("self_attention.dense", (D, D)),
                       ("mlp.dense_h_to_4h", (4 * D, D)), ("mlp.dense_4h_to_h", (D, 4 * D))]:
            e[p + n + ".weight"] = shp
            e[p + n + ".bias"] = (shp[0],)
        for n in ["input_layernorm", "post_attention_layernorm"]:
            e[p + n + ".weight"] = (D,)
            e[p + n + ".bias"] = (D,)
    return e


def check_shapes(d, expected):
    t = load_dir(d)
    missing = set(expected) - set(t)
    extra = set(t) - set(expected)
    qstest.check(not missing and not extra, f"{d}: missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}")
    for k, shp in expected.items():
        qstest.check(t[k].shape == shp, f"{d}: {k} has shape {t[k].shape}, expected {shp}")
        qstest.check(np.isfinite(t[k]).all(), f"{d}: {k} has non-finite values")
    return t


# ---- outliers ----------------------------------------------------------------------------

def rms_norm(x, g, eps=1e-5):
    return x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + eps) * g


def layer_norm(x, g, b, eps=1e-5):
    x = x.astype(np.float64)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def check_outliers(name, act, meta, lo=12.0, hi=32.0):
    """act: [tokens, D] inputs of the first q/k/v. Outlier channels ~20x the median."""
    mag = np.abs(act).mean(0)
    med = np.median(mag)
    listed = [int(c) for c in meta["qshard.synth.outlier_channels"].split(",")]
    top = sorted(np.argsort(mag)[-len(listed):].tolist())
    qstest.check(top == sorted(listed), f"{name}: largest channels {top}, metadata lists {listed}")
    ratios = mag[listed] / med
    print(f"{name}: outlier channels {listed}, ratio to median {np.round(ratios, 1).tolist()}")
    qstest.check(((ratios > lo) & (ratios < hi)).all(), f"{name}: outlier ratios {ratios} not ~20x")
    rest = np.delete(mag, listed)
    qstest.check(rest.max() / med < 2.0, f"{name}: a non-outlier channel is {rest.max() / med:.1f}x the median")
    return listed


# ---- tests --------------------------------------------------------------------------------

def test_llama_determinism_and_layout():
    args = ["--arch", "llama", "--layers", "2", "--hidden", "256", "--heads", "4", "--kv-heads", "2", "--ffn", "512",
            "--vocab", "1000", "--max-pos", "128", "--seed", "3"]
    a = synth(os.path.join(TMP, "llama_a"), *args)
    b = synth(os.path.join(TMP, "llama_b"), *args)
    c = synth(os.path.join(TMP, "llama_c"), *args[:-1], "4")
    qstest.check(files_of(a) == ["config.json", "model.safetensors"], f"files: {files_of(a)}")
    for f in files_of(a):
        qstest.check(open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read(),
                     f"{f} differs between two runs with the same options")
    qstest.check(open(os.path.join(a, "model.safetensors"), "rb").read()
                 != open(os.path.join(c, "model.safetensors"), "rb").read(), "--seed changes nothing")

    cfg = json.load(open(os.path.join(a, "config.json")))
    want = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
            "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 1000, "max_position_embeddings": 128, "hidden_act": "silu", "tie_word_embeddings": False,
            "torch_dtype": "float32", "rope_scaling": None}
    for k, v in want.items():
        qstest.check(cfg.get(k) == v and type(cfg.get(k)) is type(v), f"config.json {k} = {cfg.get(k)!r}, want {v!r}")
    for k in ["rms_norm_eps", "rope_theta"]:
        qstest.check(isinstance(cfg.get(k), (int, float)) and cfg[k] > 0, f"config.json lacks {k}")

    t = check_shapes(a, expected_llama(2, 256, 4, 2, 512, 1000, tie=False))
    with safe_open(os.path.join(a, "model.safetensors"), "np") as f:
        meta = f.metadata()
    qstest.check(meta.get("format") == "pt", f"metadata {meta}: transformers wants format=pt")
    # weights ~ N(0, 1/sqrt(in)) on normal columns
    q = t["model.layers.0.self_attn.q_proj.weight"]
    listed = [int(x) for x in meta["qshard.synth.outlier_channels"].split(",")]
    normal = np.delete(q, listed, axis=1)
    qstest.check(abs(normal.std() * 16 - 1) < 0.1, f"q_proj std {normal.std()} is not ~1/sqrt(256)")
    x = t["model.embed_tokens.weight"]
    check_outliers("llama input_layernorm(embed)", rms_norm(x, t["model.layers.0.input_layernorm.weight"]), meta)
    check_outliers("llama post_attention_layernorm(embed)",
                   rms_norm(x, t["model.layers.1.post_attention_layernorm.weight"]), meta)
    # the residual stream itself (embedding) carries sqrt(20)
    check_outliers("llama embedding", x, meta, lo=3.0, hi=7.0)

    # tied: no lm_head
    d = synth(os.path.join(TMP, "llama_tied"), *args, "--tie")
    check_shapes(d, expected_llama(2, 256, 4, 2, 512, 1000, tie=True))
    qstest.check(json.load(open(os.path.join(d, "config.json")))["tie_word_embeddings"] is True, "--tie not in config")


def bf16_rne(x):
    """f32 → bf16 bits, round to nearest even (NaN-free input)."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    u = u + 0x7FFF + ((u >> 16) & 1)
    return (u >> 16).astype(np.uint16)


def test_dtypes():
    args = ["--arch", "llama", "--layers", "1", "--hidden", "128", "--vocab", "300", "--seed", "11"]
    f32 = read_raw(os.path.join(synth(os.path.join(TMP, "dt32"), *args), "model.safetensors"))[0]
    f16 = read_raw(os.path.join(synth(os.path.join(TMP, "dt16"), *args, "--dtype", "f16"), "model.safetensors"))[0]
    bf = read_raw(os.path.join(synth(os.path.join(TMP, "dtbf"), *args, "--dtype", "bf16"), "model.safetensors"))[0]
    qstest.check(set(f32) == set(f16) == set(bf), "dtype runs differ in tensor names")
    for k, (dt, v) in f32.items():
        qstest.check(dt == "F32" and f16[k][0] == "F16" and bf[k][0] == "BF16", f"{k}: dtypes {dt} {f16[k][0]} {bf[k][0]}")
        qstest.check(np.array_equal(f16[k][1], v.astype(np.float16)), f"{k}: f16 file is not the f32 values cast")
        qstest.check(np.array_equal(bf[k][1], bf16_rne(v)), f"{k}: bf16 file is not the f32 values rounded (RNE)")
    cfg = json.load(open(os.path.join(TMP, "dtbf", "config.json")))
    qstest.check(cfg["torch_dtype"] == "bfloat16", f"torch_dtype {cfg['torch_dtype']}")


def test_sharding():
    args = ["--arch", "llama", "--layers", "3", "--hidden", "256", "--ffn", "512", "--vocab", "500", "--seed", "5"]
    one = synth(os.path.join(TMP, "one"), *args)
    many = synth(os.path.join(TMP, "many"), *args, "--max-shard-size", "600KiB")
    files = files_of(many)
    shards = [f for f in files if f.endswith(".safetensors")]
    n = len(shards)
    qstest.check(n > 3, f"expected several shards, got {files}")
    qstest.check(shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)], f"names {shards}")
    qstest.check("model.safetensors.index.json" in files and "model.safetensors" not in files, f"files {files}")
    for s in shards:
        size = os.path.getsize(os.path.join(many, s))
        n_hdr = int.from_bytes(open(os.path.join(many, s), "rb").read(8), "little")
        # one tensor may exceed the limit alone; 512x256 f32 = 512 KiB does not
        qstest.check(size - 8 - n_hdr <= 600 * 1024, f"{s} holds {size - 8 - n_hdr} bytes of tensors")
    idx = json.load(open(os.path.join(many, "model.safetensors.index.json")))
    a, b = load_dir(one), load_dir(many)
    qstest.check(set(a) == set(b), "sharded and single-file runs differ in names")
    for k in a:
        qstest.check(np.array_equal(a[k], b[k]), f"{k} differs between sharded and single-file output")
    total = sum(v.nbytes for v in a.values())
    qstest.check(idx["metadata"]["total_size"] == total, f"total_size {idx['metadata']['total_size']} != {total}")
    # re-running unsharded into the sharded dir removes the now-contradicting index
    synth(many, *args)
    qstest.check(not os.path.exists(os.path.join(many, "model.safetensors.index.json")), "stale index kept")


def test_opt():
    d = synth(os.path.join(TMP, "opt"), "--arch", "opt", "--layers", "2", "--hidden", "256", "--heads", "4",
              "--vocab", "400", "--max-pos", "100", "--seed", "1")
    cfg = json.load(open(os.path.join(d, "config.json")))
    want = {"architectures": ["OPTForCausalLM"], "model_type": "opt", "hidden_size": 256, "ffn_dim": 1024,
            "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 400, "max_position_embeddings": 100,
            "do_layer_norm_before": True, "word_embed_proj_dim": 256, "activation_function": "relu",
            "enable_bias": True}
    for k, v in want.items():
        qstest.check(cfg.get(k) == v, f"opt config.json {k} = {cfg.get(k)!r}, want {v!r}")
    t = check_shapes(d, expected_opt(2, 256, 1024, 400, 100))
    with safe_open(os.path.join(d, "model.safetensors"), "np") as f:
        meta = f.metadata()
    # OPT input: token embedding + learned position (offset 2), then self_attn_layer_norm
    ids = np.arange(400)
    pos = (np.arange(400) % 100) + 2
    x = t["model.decoder.embed_tokens.weight"][ids] + t["model.decoder.embed_positions.weight"][pos]
    p = "model.decoder.layers.0.self_attn_layer_norm."
    check_outliers("opt self_attn_layer_norm(embed+pos)", layer_norm(x, t[p + "weight"], t[p + "bias"]), meta)


def test_bloom():
    d = synth(os.path.join(TMP, "bloom"), "--arch", "bloom", "--layers", "2", "--hidden", "256", "--heads", "4",
              "--vocab", "400", "--dtype", "f16", "--seed", "2")
    cfg = json.load(open(os.path.join(d, "config.json")))
    want = {"architectures": ["BloomForCausalLM"], "model_type": "bloom", "hidden_size": 256, "n_layer": 2,
            "n_head": 4, "vocab_size": 400, "torch_dtype": "float16",
            "apply_residual_connection_post_layernorm": False}
    for k, v in want.items():
        qstest.check(cfg.get(k) == v, f"bloom config.json {k} = {cfg.get(k)!r}, want {v!r}")
    qstest.check(cfg.get("layer_norm_epsilon", 0) > 0, "bloom config.json lacks layer_norm_epsilon")
    t = check_shapes(d, expected_bloom(2, 256, 400))
    t = {k: v.astype(np.float32) for k, v in t.items()}
    with safe_open(os.path.join(d, "model.safetensors"), "np") as f:
        meta = f.metadata()
    # BLOOM: word_embeddings → word_embeddings_layernorm (the residual) → input_layernorm
    e = "transformer.word_embeddings_layernorm."
    h = layer_norm(t["transformer.word_embeddings.weight"], t[e + "weight"], t[e + "bias"])
    check_outliers("bloom residual after word_embeddings_layernorm", h, meta, lo=3.0, hi=7.0)
    p = "transformer.h.0.input_layernorm."
    check_outliers("bloom input_layernorm", layer_norm(h, t[p + "weight"], t[p + "bias"]), meta)


def minmax_grid(w, bits):
    mx, mn = np.maximum(w.max(1), 0), np.minimum(w.min(1), 0)
    scale = (mx - mn) / (2 ** bits - 1)
    scale[scale == 0] = 1
    return scale, np.round(-mn / scale)


def quantize(w, scale, zero, bits):
    return scale * (np.clip(np.round(w / scale) + zero, 0, 2 ** bits - 1) - zero)


def rtn(W, bits, gs):
    Q = np.empty_like(W)
    for c in range(0, W.shape[1], gs):
        s, z = minmax_grid(W[:, c:c + gs], bits)
        Q[:, c:c + gs] = quantize(W[:, c:c + gs], s[:, None], z[:, None], bits)
    return Q


def gptq(W, H, bits, gs, damp=0.01):
    """GPTQ (Frantar et al. 2022), one column at a time, the textbook form."""
    W = W.copy()
    n = W.shape[1]
    H = H + damp * np.mean(np.diag(H)) * np.eye(n)
    U = np.linalg.cholesky(np.linalg.inv(H)).T  # upper Cholesky factor of H^-1
    Q = np.zeros_like(W)
    for i in range(n):
        if i % gs == 0:
            s, z = minmax_grid(W[:, i:i + gs], bits)
        Q[:, i] = quantize(W[:, i], s, z, bits)
        e = (W[:, i] - Q[:, i]) / U[i, i]
        W[:, i + 1:] -= np.outer(e, U[i, i + 1:])
    return Q


def test_gptq_beats_rtn():
    """The synthetic activations are correlated like real ones, so GPTQ's error
    feedback clearly beats round-to-nearest on held-out inputs."""
    d = synth(os.path.join(TMP, "gptq"), "--arch", "llama", "--layers", "1", "--hidden", "256", "--ffn", "512",
              "--vocab", "2048", "--seed", "9")
    t = {k: v.astype(np.float64) for k, v in load_file(os.path.join(d, "model.safetensors")).items()}
    X = rms_norm(t["model.embed_tokens.weight"], t["model.layers.0.input_layernorm.weight"])
    # 3/4 of the embedding's variance in 16 directions (normal channels only)
    with safe_open(os.path.join(d, "model.safetensors"), "np") as f:
        listed = [int(c) for c in f.metadata()["qshard.synth.outlier_channels"].split(",")]
    sv = np.linalg.svd(np.delete(t["model.embed_tokens.weight"], listed, axis=1), compute_uv=False) ** 2
    top = sv[:16].sum() / sv.sum()
    qstest.check(0.6 < top < 0.9, f"top-16 directions hold {top:.2f} of the embedding variance, expected ~0.75")
    calib, held = X[:1024], X[1024:]
    H = calib.T @ calib / len(calib)
    for name in ["self_attn.q_proj", "mlp.up_proj"]:
        W = t[f"model.layers.0.{name}.weight"]
        ref = held @ W.T
        e_rtn = np.mean((held @ rtn(W, 4, 128).T - ref) ** 2)
        e_gptq = np.mean((held @ gptq(W, H, 4, 128).T - ref) ** 2)
        print(f"{name} 4-bit g128 held-out output MSE: RTN {e_rtn:.3e}, GPTQ {e_gptq:.3e}, ratio {e_rtn / e_gptq:.2f}")
        qstest.check(e_rtn / e_gptq > 1.5, f"{name}: GPTQ only {e_rtn / e_gptq:.2f}x better than RTN")


def test_peak_rss():
    """A ~480 MB model is written with a small, size-independent footprint."""
    out = os.path.join(TMP, "rss")
    cmd = [qstest.qshard(), "synth", "--arch", "llama", "--layers", "8", "--hidden", "1024", "--ffn", "2816",
           "--vocab", "8000", "--out", out]
    # GNU time measures its own child, which it forked itself. Without it, wait4's
    # ru_maxrss is an upper bound: Linux carries the high-water mark of the forking
    # process (this Python, with NumPy and arrays) over exec.
    gnu_time = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
    if gnu_time:
        cmd = [gnu_time, "-f", "maxrss_kib=%M"] + cmd
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, ru = os.wait4(p.pid, 0)
    err = p.stderr.read()
    qstest.check(os.waitstatus_to_exitcode(status) == 0, f"{cmd} failed: {err}")
    rss_kib = ru.ru_maxrss
    if gnu_time:
        rss_kib = int(err.strip().splitlines()[-1].split("=")[1])
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    rss_mb = rss_kib / 1024
    print(f"synth wrote {size / 1e6:.0f} MB with peak RSS {rss_mb:.1f} MB ({'GNU time' if gnu_time else 'wait4'})")
    qstest.check(size > 400e6, f"only {size} bytes written")
    qstest.check(rss_mb < 120, f"peak RSS {rss_mb:.1f} MB for a {size / 1e6:.0f} MB model")
    shutil.rmtree(out)


def test_errors():
    cases = [
        (["--arch", "gpt2", "--layers", "1", "--hidden", "64", "--out", TMP + "/e"], "gpt2"),
        (["--arch", "llama", "--layers", "1", "--hidden", "64"], "--out"),
        (["--arch", "llama", "--layers", "1", "--hidden", "64", "--heads", "5", "--out", TMP + "/e"], "--heads"),
        (["--arch", "llama", "--layers", "1", "--hidden", "64", "--heads", "4", "--kv-heads", "3", "--out",
          TMP + "/e"], "--kv-heads"),
        (["--arch", "llama", "--layers", "x", "--hidden", "64", "--out", TMP + "/e"], "--layers"),
        (["--arch", "llama", "--layers", "1", "--hidden", "64", "--dtype", "f8", "--out", TMP + "/e"], "--dtype"),
        (["--arch", "bloom", "--layers", "1", "--hidden", "64", "--ffn", "100", "--out", TMP + "/e"], "--ffn"),
        (["--arch", "llama", "--layers", "1", "--hidden", "64", "--no-such", "--out", TMP + "/e"], "no-such"),
        (["--arch", "llama", "--layers", "1", "--hidden", "64", "--out", "/proc/forbidden/x"], "/proc/forbidden"),
    ]
    for args, frag in cases:
        p = qstest.run(["synth", *args], expect=None)
        lines = p.stderr.strip().splitlines()
        want_rc = 1 if frag == "/proc/forbidden" else 2
        qstest.check(p.returncode == want_rc, f"synth {args}: exit {p.returncode}, want {want_rc}")
        qstest.check(len(lines) == 1 and frag in lines[0], f"synth {args}: stderr {p.stderr!r} lacks {frag!r}")
    p = qstest.run(["synth", "--help"])
    qstest.check("--arch" in p.stdout, "synth --help does not list --arch")


def main():
    tests = [test_llama_determinism_and_layout, test_dtypes, test_sharding, test_opt, test_bloom, test_gptq_beats_rtn, test_peak_rss,
             test_errors]
    try:
        for t in tests:
            t()
            print(f"ok {t.__name__}")
    finally:
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
