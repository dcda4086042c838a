"""Tiny random-weight llama / qwen2 / opt / bloom checkpoints made by HF
transformers (tests/fixtures/hf_tiny/make_fixtures.py): qshard's whole-model
forward gives the logits transformers computed, to 1e-4 max abs difference.
Covers biases, GQA, llama3 rope scaling, tied and untied heads, OPT's learned
positions and LayerNorms, BLOOM's ALiBi with 6 heads (non-power-of-2 slopes),
its fused query_key_value layout and word_embeddings_layernorm."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qstest  # noqa: E402

FIXTURES = ("llama", "qwen2", "opt", "bloom")


def main():
    np = qstest.need("numpy")
    tmp = qstest.tmpdir()
    for name in FIXTURES:
        d = qstest.source("tests", "fixtures", "hf_tiny", name)
        ref = np.load(os.path.join(d, "logits.npy"))
        toks = np.load(os.path.join(d, "tokens.npy"))
        out = os.path.join(tmp, name + ".npy")
        p = qstest.run(["eval", "--model", d, "--tokens", os.path.join(d, "tokens.npy"), "--json", "--batch", "2",
                        "--dump-logits", out])
        got = np.load(out)
        qstest.check(got.shape == ref.shape, f"{name}: logits shape {got.shape}, expected {ref.shape}")
        err = float(np.abs(got - ref).max())
        print(f"{name}: max |logits - transformers| = {err:.2e} (logits up to {np.abs(ref).max():.1f})")
        qstest.check(err < 1e-4, f"{name}: max abs logit difference {err}")
        # the reported NLL is the mean over positions 1..L-1 of the reference logits' NLL
        z = ref[:, :-1].astype(np.float64)
        lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
        tgt = toks[:, 1:]
        nll = (lse - np.take_along_axis(z, tgt[..., None], -1)[..., 0]).mean()
        res = json.loads(p.stdout)
        qstest.check(abs(res["nll"] - nll) < 1e-5 * max(1.0, nll), f"{name}: nll {res['nll']} vs {nll}")
        qstest.check(res["tokens"] == tgt.size, f"{name}: tokens {res['tokens']}")
    print("ok")


if __name__ == "__main__":
    main()
