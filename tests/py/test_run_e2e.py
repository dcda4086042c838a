"""qshard run end to end with real MPI ranks.

- tinystories-656K (real) and synthetic llama/opt/bloom quantize with
  mpirun -np 1|2|3; exact-schedule exports are byte-identical across P.
- GPTQ beats RTN in held-out NLL at 4-bit g32 and 3-bit g32 on tinystories.
- Bad set-ups and a rank failing mid-run stop the run with one clear line and
  leave no index (an incomplete export never looks complete).
Calibration/eval tokens come from PyPI `tokenizers` (independent of our C tokenizer).
"""
import filecmp
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402

np = qstest.need("numpy")
tokenizers = qstest.need("tokenizers")

MODEL = qstest.shared("models", "tinystories-656K")
TEXT = qstest.shared("text", "tinystories_valid_head.txt")
tmp = qstest.tmpdir()


def token_rows(start_par, n_rows, seq):
    return qstest.story_rows(os.path.join(MODEL, "tokenizer.json"), TEXT, start_par, n_rows, seq)


def model_files(d):
    return sorted(f for f in os.listdir(d) if f.endswith((".safetensors", ".json", ".gguf")))


def same_exports(a, b, skip=()):
    fa = [f for f in model_files(a) if not f.endswith(skip or ("//",))]
    fb = [f for f in model_files(b) if not f.endswith(skip or ("//",))]
    qstest.check(fa == fb, f"{a} and {b} hold different files: {fa} vs {fb}")
    for f in fa:
        qstest.check(filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False),
                     f"{f} differs between {a} and {b}")


last_log = {}


def quantize(np_, model, calib, tag, *extra):
    out, work = os.path.join(tmp, "out-" + tag), os.path.join(tmp, "work-" + tag)
    p = qstest.mpirun(np_, ["run", "--model", model, "--calib", calib, "--work", work, "--out", out,
                            "--micro-batch", "4", *extra])
    last_log[tag] = p.stdout  # progress lines go to stdout (errors and warnings to stderr)
    qstest.check(os.path.exists(os.path.join(out, "model.safetensors.index.json")), f"{out}: no index")
    if any("gguf" in str(e) for e in extra):
        qstest.check(os.path.getsize(os.path.join(out, "model.gguf")) > 0, f"{out}: no model.gguf")
    return out, work


def names_of_embedding(ins, arch):
    """The tensors the embedding stage reads, per architecture (HF names)."""
    names = [t["name"] for t in ins["other_tensors"]]
    keep = ("embed_tokens.weight", "embed_positions.weight", "word_embeddings.weight",
            "word_embeddings_layernorm.weight", "word_embeddings_layernorm.bias")
    return {n for n in names if n.endswith(keep)}


def quality(model, tokens):
    p = qstest.run(["eval", "--model", model, "--tokens", tokens, "--ref", MODEL, "--json"])
    return json.loads(p.stdout)


calib = os.path.join(tmp, "calib.npy")
np.save(calib, token_rows(0, 128, 64))
evalset = os.path.join(tmp, "eval.npy")
np.save(evalset, token_rows(3000, 64, 64))

# --- tinystories: P = 1, 2 byte-identical; GPTQ < RTN ------------------------------
results = {}
for bits in (4, 3):
    for method in ("gptq", "rtn"):
        outs = []
        for np_ in ((1, 2) if (bits, method) == (4, "gptq") else (1,)):
            fmt = ["--formats", "gptq,gguf", "--rtn-baseline"] if (bits, method) == (4, "gptq") else []
            out, work = quantize(np_, MODEL, calib, f"ts-{method}{bits}-p{np_}", "--method", method,
                                 "--bits", bits, "--group-size", 32, *fmt)
            outs.append(out)
        for o in outs[1:]:
            same_exports(outs[0], o)
        results[(bits, method)] = quality(outs[0], evalset)
# thread counts must not change the numbers (mpirun binds a rank to one core when
# ranks <= cores, not when oversubscribed): one BLAS/OpenMP thread vs two
one = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
qstest.run(["run", "--model", MODEL, "--calib", calib, "--work", os.path.join(tmp, "w-1thread"), "--out",
            os.path.join(tmp, "o-1thread"), "--micro-batch", "4", "--method", "gptq", "--bits", 4, "--group-size", 32],
           env=one)
same_exports(os.path.join(tmp, "out-ts-gptq4-p1"), os.path.join(tmp, "o-1thread"), skip=(".gguf",))
base = quality(MODEL, evalset)["nll"]
print(f"tinystories NLL: fp {base:.4f}; " +
      ", ".join(f"{m}{b}: {v['nll']:.4f} (KL {v['kl_mean']:.4f}, top-1 {v['top1']:.3f})" for (b, m), v in results.items()))
for bits in (4, 3):
    g, r = results[(bits, "gptq")], results[(bits, "rtn")]
    qstest.check(g["nll"] < r["nll"], f"{bits}-bit: GPTQ NLL {g['nll']} is not below RTN {r['nll']}")
    qstest.check(g["kl_mean"] < r["kl_mean"], f"{bits}-bit: GPTQ KL {g['kl_mean']} is not below RTN {r['kl_mean']}")
    qstest.check(g["nll"] > base - 0.05, "a quantized model should not beat FP by much")

# report: per-layer losses, GPTQ ≤ RTN on the H-weighted loss
rep = json.load(open(os.path.join(tmp, "work-ts-gptq4-p2", "qshard_report.json")))
qstest.check(len(rep["layers"]) == 14, f"report has {len(rep['layers'])} linears, expected 2 blocks × 7")
for e in rep["layers"]:
    qstest.check(e["loss"] <= e["loss_rtn"] * (1 + 1e-6), f"{e['name']}: GPTQ loss {e['loss']} > RTN {e['loss_rtn']}")
qstest.check(len(rep["per_rank"]) == 2, "report lists 2 ranks")

# --- synthetic llama (12 blocks), opt and bloom: P = 1, 2, 3 byte-identical -----------------
rng = np.random.default_rng(0)
for arch, extra in (("llama", ["--kv-heads", "2", "--ffn", "160"]), ("opt", []), ("bloom", [])):
    layers = 12 if arch == "llama" else 3
    model = os.path.join(tmp, f"synth-{arch}")
    qstest.run(["synth", "--arch", arch, "--layers", layers, "--hidden", 64, "--heads", 4, "--vocab", 256,
                "--seed", 5, "--out", model, *extra])
    scal = os.path.join(tmp, f"calib-{arch}.npy")
    np.save(scal, rng.integers(0, 256, size=(8, 32), dtype=np.int32))
    outs = [quantize(p, model, scal, f"{arch}-p{p}", "--act-order", "--group-size", 32)[0] for p in (1, 2, 3)]
    for o in outs[1:]:
        same_exports(outs[0], o)
    print(f"{arch}: exports identical for P = 1, 2, 3 ({len(model_files(outs[0]))} files)")
    # each rank reads only its own blocks' tensors (and the first, the embedding)
    ins = json.loads(qstest.run(["inspect", model, "--json"]).stdout)
    rep = json.load(open(os.path.join(tmp, f"work-{arch}-p3", "qshard_report.json")))
    for r in rep["per_rank"]:
        own = sum(ins["blocks"][i]["bytes"] for i in range(r["first_block"], r["end_block"]))
        if r["rank"] == 0:
            own += sum(t["bytes"] for t in ins["other_tensors"] if t["name"] in names_of_embedding(ins, arch))
        qstest.check(r["bytes_read"] == own, f"{arch} rank {r['rank']} read {r['bytes_read']} bytes, its blocks "
                     f"[{r['first_block']}, {r['end_block']}) (+ embedding on rank 0) hold {own}")
    # rank 0 reports every block of every rank, with an ETA
    lines = [l for l in last_log[f"{arch}-p3"].splitlines() if f" of {layers} quantized (rank " in l]
    qstest.check(len(lines) == layers, f"{arch}: expected {layers} progress lines:\n{last_log[f'{arch}-p3']}")
    qstest.check({l.split("(rank ")[1][0] for l in lines} == {"0", "1", "2"} and all("ETA" in l for l in lines),
                 f"{arch}: progress lines name every rank and an ETA")

# --- errors: one line, exit 2, no index ----------------------------------------------------
p = qstest.mpirun(3, ["run", "--model", MODEL, "--calib", calib, "--work", os.path.join(tmp, "w3"),
                      "--out", os.path.join(tmp, "o3")], expect=2)
lines = [l for l in p.stderr.splitlines() if "error" in l]
qstest.check(len(lines) == 1 and "at most 2 ranks" in lines[0], f"3 ranks for 2 blocks: {p.stderr}")
p = qstest.run(["run", "--model", MODEL, "--calib", os.path.join(tmp, "nope.npy"), "--work", os.path.join(tmp, "w4"),
                "--out", os.path.join(tmp, "o4")], expect=2)
qstest.check("nope.npy" in p.stderr and len(p.stderr.strip().splitlines()) == 1, f"missing calib: {p.stderr}")
bad = os.path.join(tmp, "bad-calib.npy")
np.save(bad, np.full((2, 8), 5000, dtype=np.int32))
p = qstest.run(["run", "--model", MODEL, "--calib", bad, "--work", os.path.join(tmp, "w5"),
                "--out", os.path.join(tmp, "o5")], expect=2)
qstest.check("vocabulary" in p.stderr, f"out-of-vocabulary calibration: {p.stderr}")

# a rank failing mid-run (NaN in a weight of the last rank's block): the run stops, names the rank
qstest.need("safetensors")
import safetensors.numpy as safetensors_np  # noqa: E402
model = os.path.join(tmp, "synth-llama-nan")
qstest.run(["synth", "--arch", "llama", "--layers", 3, "--hidden", 64, "--heads", 4, "--vocab", 256, "--seed", 5,
            "--out", model])
st = os.path.join(model, "model.safetensors")
tensors = safetensors_np.load_file(st)
w = tensors["model.layers.2.mlp.down_proj.weight"].copy()
w[3, 7] = np.nan
tensors["model.layers.2.mlp.down_proj.weight"] = w
safetensors_np.save_file(tensors, st)
out = os.path.join(tmp, "o-nan")
p = qstest.mpirun(3, ["run", "--model", model, "--calib", os.path.join(tmp, "calib-llama.npy"),
                      "--work", os.path.join(tmp, "w-nan"), "--out", out, "--group-size", 32], expect=None, timeout=120)
qstest.check(p.returncode != 0, "a NaN weight must fail the run")
qstest.check("rank 2" in p.stderr and "down_proj" in p.stderr, f"the failing rank and tensor are named: {p.stderr}")
qstest.check(not os.path.exists(os.path.join(out, "model.safetensors.index.json")), "no index after a failed run")
print("ok")
