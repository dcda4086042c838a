"""`qshard eval` on a GPTQ export: linears stored as qweight/qzeros/scales/g_idx
are dequantized on load. The export is written here with NumPy from the GPTQ
convention (bit streams packed LSB first, qweight along the input, qzeros
along the output, v1 storing zero − 1), RTN-quantizing tinystories-656K with
an act-order style g_idx; a second directory holds the same weights
dequantized by NumPy as plain f32. Both must give the same logits."""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qstest  # noqa: E402


def pack_stream(vals, bits):
    """vals [n, cols] small ints → int32 [n·bits/32, cols]: per column, a bit
    stream along axis 0, value k at bits [k·bits, k·bits+bits), LSB first."""
    import numpy as np
    n, cols = vals.shape
    b = ((vals[:, None, :].astype(np.uint64) >> np.arange(bits, dtype=np.uint64)[None, :, None]) & 1)
    b = b.reshape(n * bits, cols)  # stream bit index = k·bits + j
    words = b.reshape(n * bits // 32, 32, cols)
    w = (words * (np.uint64(1) << np.arange(32, dtype=np.uint64))[None, :, None]).sum(1)
    return w.astype(np.uint32).view(np.int32)


def quantize(W, bits, group, rng):
    """Asymmetric RTN per (group, output) with a random input permutation as
    the group order (what desc_act produces). Returns q [in, out], zeros,
    scales (f16) [groups, out], g_idx [in]."""
    import numpy as np
    out, inn = W.shape
    maxq = 2 ** bits - 1
    perm = rng.permutation(inn)
    g_idx = np.empty(inn, dtype=np.int32)
    g_idx[perm] = np.arange(inn) // group
    groups = inn // group
    scales = np.empty((groups, out), np.float16)
    zeros = np.empty((groups, out), np.int64)
    q = np.empty((inn, out), np.int64)
    for g in range(groups):
        cols = np.where(g_idx == g)[0]
        blk = W[:, cols].astype(np.float64)
        lo, hi = np.minimum(blk.min(1), 0), np.maximum(blk.max(1), 0)
        sc = np.maximum((hi - lo) / maxq, 1e-8).astype(np.float16)
        z = np.clip(np.round(-lo / sc.astype(np.float64)), 1, maxq)  # >= 1 so v1 (zero − 1) can store it
        qq = np.clip(np.round(blk / sc.astype(np.float64)[:, None]) + z[:, None], 0, maxq)
        scales[g], zeros[g], q[cols] = sc, z, qq.T
    return q, zeros, scales, g_idx


def main():
    np = qstest.need("numpy")
    qstest.need("safetensors")
    import safetensors.numpy as st
    base = qstest.shared("models", "tinystories-656K")
    tmp = qstest.tmpdir()
    w = st.load_file(os.path.join(base, "model.f32.safetensors"))
    cfg = json.load(open(os.path.join(base, "config.json")))
    rng = np.random.default_rng(11)
    toks = rng.integers(3, 2048, size=(3, 40)).astype(np.int32)
    toks[:, 0] = 1
    tpath = os.path.join(tmp, "t.npy")
    np.save(tpath, toks)

    for bits, fmt in ((4, "gptq"), (3, "gptq_v2"), (8, "gptq")):
        exp_dir, deq_dir = os.path.join(tmp, f"gptq{bits}"), os.path.join(tmp, f"deq{bits}")
        os.makedirs(exp_dir)
        os.makedirs(deq_dir)
        qcfg = dict(cfg, quantization_config={"quant_method": "gptq", "bits": bits, "group_size": 32,
                                              "desc_act": True, "sym": False, "checkpoint_format": fmt})
        json.dump(qcfg, open(os.path.join(exp_dir, "config.json"), "w"))
        shutil.copy(os.path.join(base, "config.json"), deq_dir)
        exp, deq = {}, {}
        for name, t in w.items():
            if t.ndim == 2 and ".layers." in name:
                P = name[: -len(".weight")]
                q, z, s, g = quantize(t, bits, 32, rng)
                exp[P + ".qweight"] = pack_stream(q, bits)
                exp[P + ".qzeros"] = pack_stream((z - (1 if fmt == "gptq" else 0)).T, bits).T.copy()
                exp[P + ".scales"] = s
                exp[P + ".g_idx"] = g
                deq[name] = (s.astype(np.float32)[g, :] * (q - z[g, :]).astype(np.float32)).T.copy()
            else:
                exp[name] = deq[name] = t
        st.save_file(exp, os.path.join(exp_dir, "model.safetensors"), metadata={"format": "pt"})
        st.save_file(deq, os.path.join(deq_dir, "model.safetensors"), metadata={"format": "pt"})
        la, lb = os.path.join(tmp, f"a{bits}.npy"), os.path.join(tmp, f"b{bits}.npy")
        ra = json.loads(qstest.run(["eval", "--model", exp_dir, "--tokens", tpath, "--json", "--dump-logits",
                                    la]).stdout)
        rb = json.loads(qstest.run(["eval", "--model", deq_dir, "--tokens", tpath, "--json", "--dump-logits",
                                    lb]).stdout)
        d = float(np.abs(np.load(la) - np.load(lb)).max())
        print(f"{bits}-bit {fmt}: nll export {ra['nll']:.6f} dequantized {rb['nll']:.6f}, max logit diff {d:.1e}")
        qstest.check(d <= 1e-6, f"{bits}-bit: logits differ by {d}")
        # the quantization did change the model (so the test would see a loader that ignored qweight)
        ro = json.loads(qstest.run(["eval", "--model", base, "--tokens", tpath, "--json"]).stdout)
        qstest.check(abs(ro["nll"] - ra["nll"]) > 1e-5, "quantized and original models give the same NLL")

    # a qweight whose shape does not fit the linear is an input error naming the tensor
    bad = dict(exp)
    key = [k for k in bad if k.endswith("q_proj.qweight")][0]
    bad[key] = bad[key][:-1]
    st.save_file(bad, os.path.join(exp_dir, "model.safetensors"))
    p = qstest.run(["eval", "--model", exp_dir, "--tokens", tpath], expect=2)
    qstest.check("q_proj.qweight" in p.stderr, p.stderr)
    print("ok")


if __name__ == "__main__":
    main()
