"""`qshard eval --ref`: mean KL(ref || model), its 99th percentile and top-1
agreement equal what NumPy computes from the two models' logits (dumped by
eval itself; the forward is checked by the test_forward_* tests); NLL does not
depend on --batch; bad input exits 2 with one line naming the file."""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qstest  # noqa: E402


def log_softmax(z):
    import numpy as np
    z = z.astype(np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def main():
    np = qstest.need("numpy")
    qstest.need("safetensors")
    import safetensors.numpy as st
    base = qstest.shared("models", "tinystories-656K")
    tmp = qstest.tmpdir()

    # a perturbed copy of the model: every weight gets 3% relative noise
    pert = os.path.join(tmp, "perturbed")
    os.makedirs(pert)
    shutil.copy(os.path.join(base, "config.json"), pert)
    w = st.load_file(os.path.join(base, "model.f32.safetensors"))
    rng = np.random.default_rng(5)
    w = {k: (v * (1 + 0.03 * rng.standard_normal(v.shape))).astype(np.float32) for k, v in w.items()}
    st.save_file(w, os.path.join(pert, "model.safetensors"))

    toks = rng.integers(3, 2048, size=(5, 48)).astype(np.int64)  # int64 on disk is accepted too
    toks[:, 0] = 1
    tpath = os.path.join(tmp, "t.npy")
    np.save(tpath, toks)

    ml, rl = os.path.join(tmp, "m.npy"), os.path.join(tmp, "r.npy")
    # one compute dtype for both evals (the base model is bf16: its default would be bf16 compute)
    got = json.loads(qstest.run(["eval", "--model", pert, "--ref", base, "--tokens", tpath, "--json",
                                 "--dump-logits", ml, "--compute-dtype", "f32"]).stdout)
    qstest.run(["eval", "--model", base, "--tokens", tpath, "--dump-logits", rl, "--compute-dtype", "f32"])
    lm, lr = log_softmax(np.load(ml)[:, :-1]), log_softmax(np.load(rl)[:, :-1])
    kl = (np.exp(lr) * (lr - lm)).sum(-1).ravel()
    top1 = (lr.argmax(-1) == lm.argmax(-1)).ravel().mean()
    nll = -np.take_along_axis(lm, toks[:, 1:, None], -1).mean()
    print(f"qshard: kl_mean {got['kl_mean']:.6g} kl_p99 {got['kl_p99']:.6g} top1 {got['top1']:.4f} nll {got['nll']:.6f}")
    print(f"numpy:  kl_mean {kl.mean():.6g} kl_p99 {np.percentile(kl, 99):.6g} top1 {top1:.4f} nll {nll:.6f}")
    qstest.check(got["tokens"] == 5 * 47, f"tokens {got['tokens']}")
    qstest.check(kl.mean() > 1e-3, "the perturbation is too small to test KL")
    qstest.check(abs(got["kl_mean"] - kl.mean()) <= 1e-6 * kl.mean() + 1e-9, "kl_mean")
    qstest.check(abs(got["kl_p99"] - np.percentile(kl, 99)) <= 1e-6 * kl.max() + 1e-9, "kl_p99")
    qstest.check(abs(got["top1"] - top1) < 1e-12, "top1")
    qstest.check(abs(got["nll"] - nll) <= 1e-7 * nll, "nll")
    qstest.check(abs(got["ppl"] - np.exp(nll)) <= 1e-6 * np.exp(nll), "ppl")

    # a model against itself: KL 0, full agreement; batch size does not change the numbers
    same = [json.loads(qstest.run(["eval", "--model", base, "--ref", base, "--tokens", tpath, "--json", "--batch",
                                   str(b)]).stdout) for b in (1, 3, 8)]
    for s in same:
        qstest.check(s["kl_mean"] < 1e-9 and s["top1"] == 1.0, f"self-KL {s}")
        qstest.check(abs(s["nll"] - same[0]["nll"]) < 1e-6 * same[0]["nll"], f"batch changes nll: {s}")

    # the same tokens as an HDF5 token set (dataset input_ids) give the same numbers
    try:
        import h5py
    except ImportError:
        h5py = None
    if h5py is not None:
        hpath = os.path.join(tmp, "t.h5")
        with h5py.File(hpath, "w") as f:
            f.create_dataset("input_ids", data=toks.astype(np.int32))
        h = json.loads(qstest.run(["eval", "--model", base, "--tokens", hpath, "--json"]).stdout)
        qstest.check(h["tokens"] == same[0]["tokens"] and abs(h["nll"] - same[0]["nll"]) < 1e-9 * h["nll"],
                     f"HDF5 token set gives {h}, .npy gives {same[0]}")

    # bad input: exit 2, one line on stderr naming the file
    bad = toks.copy()
    bad[2, 7] = 5000
    bpath = os.path.join(tmp, "bad.npy")
    np.save(bpath, bad)
    p = qstest.run(["eval", "--model", base, "--tokens", bpath], expect=2)
    qstest.check("bad.npy" in p.stderr and "5000" in p.stderr and "row 2" in p.stderr, p.stderr)
    qstest.check(len(p.stderr.strip().splitlines()) == 1, p.stderr)
    np.save(bpath, toks[0])
    p = qstest.run(["eval", "--model", base, "--tokens", bpath], expect=2)
    qstest.check("bad.npy" in p.stderr, p.stderr)
    np.save(bpath, toks[:, :1])
    p = qstest.run(["eval", "--model", base, "--tokens", bpath], expect=2)
    qstest.check("bad.npy" in p.stderr and "L >= 2" in p.stderr, p.stderr)
    tiny = qstest.source("tests", "fixtures", "hf_tiny", "llama")
    p = qstest.run(["eval", "--model", base, "--ref", tiny, "--tokens", tpath], expect=2)
    qstest.check("vocabulary" in p.stderr, p.stderr)
    p = qstest.run(["eval", "--model", os.path.join(tmp, "nope"), "--tokens", tpath], expect=None)
    qstest.check(p.returncode in (1, 2) and "nope" in p.stderr, p.stderr)
    qstest.run(["eval", "--tokens", tpath], expect=2)
    qstest.run(["eval", "--model", base, "--tokens", tpath, "--batch", "0"], expect=2)
    print("ok")


if __name__ == "__main__":
    main()
