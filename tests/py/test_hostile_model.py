"""Hostile model directories (issue 15, items 4, 10 and 12's vocab check).

config.json's sizes are checked against the tensors present (and plausible
bounds) before anything is sized by them, and `qshard inspect` (with and
without --check) checks every tensor `qshard run` uses with the run's rules:
- num_hidden_layers 1e9 with a 2-block checkpoint: inspect and run exit 2
  naming the field at once (before: inspect asked for 4.5 TB);
- BLOOM hidden_size 6e8: exit 2 naming the field (before: 4·hidden overflowed);
- vocab_size 128 with a [64, hidden] embedding: exit 2 naming the embedding;
- model.norm.weight of shape []: inspect and inspect --check exit 2;
- Inf in the final norm: inspect --check and run exit 2 naming it (before: the
  run copied it into the export);
- an I16 q_proj: inspect and inspect --check exit 2, like run.
Each failure is exactly one stderr line. The good model passes all three.
(`qshard run` checks the same tensors through the same function,
pipeline/formats/model_check.c: it is run here on one case of each level —
shapes/dtypes, values outside the blocks, config bounds, block count — to
keep this test short under ASan.)
Labelled unit: the CI runs it against the ASan + UBSan build too.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402
import hostile  # noqa: E402

np = qstest.need("numpy")
qstest.need("safetensors")
import safetensors.numpy as stnp  # noqa: E402

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_attention_heads": 2, "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 64,
    "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": True,
    "hidden_act": "silu", "torch_dtype": "float32",
}


def tensors():
    rng = np.random.default_rng(1)
    t = {"model.embed_tokens.weight": (64, 64), "model.norm.weight": (64,)}
    for L in range(2):
        p = f"model.layers.{L}."
        t.update({p + "input_layernorm.weight": (64,), p + "post_attention_layernorm.weight": (64,),
                  p + "self_attn.q_proj.weight": (64, 64), p + "self_attn.k_proj.weight": (64, 64),
                  p + "self_attn.v_proj.weight": (64, 64), p + "self_attn.o_proj.weight": (64, 64),
                  p + "mlp.gate_proj.weight": (128, 64), p + "mlp.up_proj.weight": (128, 64),
                  p + "mlp.down_proj.weight": (64, 128)})
    return {k: (rng.standard_normal(s) * 0.1).astype(np.float32) for k, s in t.items()}


root = qstest.tmpdir("qs-hostile-model-")
calib = os.path.join(root, "calib.npy")
hostile.tokens(calib)


def model(name, config=None, edit=None):
    d = os.path.join(root, name)
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config or CONFIG, f)
    t = tensors()
    if edit:
        edit(t)
    stnp.save_file(t, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    return d


def run(d, tag):
    return qstest.run(hostile.run_args(d, calib, os.path.join(root, f"w-{tag}"), os.path.join(root, f"o-{tag}")),
                      expect=None)


def refused(p, *words):
    qstest.check(p.returncode == 2, f"exit {p.returncode}, expected 2:\n{p.stderr}")
    return hostile.one_error_line(p, *words)


good = model("good")
for args in (["inspect", good], ["inspect", good, "--check"]):
    qstest.run(args)
qstest.run(hostile.run_args(good, calib, os.path.join(root, "w-good"), os.path.join(root, "o-good")))
print("good model: inspect, inspect --check and run pass")

# num_hidden_layers 1e9 with a 2-block checkpoint: above any model
d = model("layers1e9", dict(CONFIG, num_hidden_layers=1000000000))
for args in (["inspect", d], ["inspect", d, "--check"], ["plan", d, "--ranks", "2"]):
    line = refused(qstest.run(args, expect=None), "config.json", "num_hidden_layers", "1000000000")
refused(run(d, "layers1e9"), "num_hidden_layers", "1000000000")
print(f"num_hidden_layers 1e9: {line}")
# ... and a plausible 500000 that the 2-block checkpoint does not back
# (`qshard plan` plans from config.json alone, for models not on this machine:
# its sizes and time are the planner's business, not the tensors')
d = model("layers5e5", dict(CONFIG, num_hidden_layers=500000))
for args in (["inspect", d], ["inspect", d, "--check"]):
    line = refused(qstest.run(args, expect=None), "config.json", "num_hidden_layers", "500000",
                   "model.layers.499999.", "blocks 0..1")
refused(run(d, "layers5e5"), "num_hidden_layers", "blocks 0..1")
print(f"num_hidden_layers 500000: {line}")

# a BLOOM config with hidden_size 6e8: refused at the field, before 4·hidden overflows
bloom = {"architectures": ["BloomForCausalLM"], "model_type": "bloom", "hidden_size": 600000000, "n_layer": 2,
         "n_head": 8, "vocab_size": 64}
d = os.path.join(root, "bloom6e8")
os.makedirs(d)
json.dump(bloom, open(os.path.join(d, "config.json"), "w"))
stnp.save_file({"transformer.word_embeddings_layernorm.weight": np.ones(8, np.float32)},
               os.path.join(d, "model.safetensors"))
for args in (["inspect", d], ["plan", os.path.join(d, "config.json"), "--ranks", "2"]):
    line = refused(qstest.run(args, expect=None), "config.json", "hidden_size", "600000000")
print(f"bloom hidden 6e8: {line}")

# vocab_size against the embedding
d = model("vocab", dict(CONFIG, vocab_size=128))
for args in (["inspect", d], ["inspect", d, "--check"]):
    line = refused(qstest.run(args, expect=None), "model.embed_tokens.weight", "[64,64]", "[128,64]")
print(f"vocab_size 128 vs a [64, 64] embedding: {line}")


def scalar_norm(t):
    t["model.norm.weight"] = np.array(1.0, dtype=np.float32)


d = model("norm0d", edit=scalar_norm)
for args in (["inspect", d], ["inspect", d, "--check"]):
    line = refused(qstest.run(args, expect=None), "model.norm.weight", "final norm", "[64]")
print(f"model.norm.weight of shape []: {line}")


def inf_norm(t):
    t["model.norm.weight"][7] = np.inf


d = model("norminf", edit=inf_norm)
qstest.run(["inspect", d])  # shapes are fine; the values are --check's business
line = refused(qstest.run(["inspect", d, "--check"], expect=None), "model.norm.weight", "element 7", "Inf")
p = run(d, "norminf")
refused(p, "model.norm.weight", "element 7", "Inf")
qstest.check(not os.path.exists(os.path.join(root, "o-norminf")), "the refused run created its --out")
print(f"Inf in the final norm: {line}")


def i16_q(t):
    t["model.layers.1.self_attn.q_proj.weight"] = (t["model.layers.1.self_attn.q_proj.weight"] * 100).astype(np.int16)


d = model("i16", edit=i16_q)
for args in (["inspect", d], ["inspect", d, "--check"]):
    line = refused(qstest.run(args, expect=None), "model.layers.1.self_attn.q_proj.weight", "I16")
refused(run(d, "i16"), "model.layers.1.self_attn.q_proj.weight", "I16")
print(f"I16 q_proj: {line}")
print("ok")
