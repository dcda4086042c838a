"""qshard run in bf16 compute (bf16 GEMM operands, f32 sums; Hessians from the
bf16 activations; the GPTQ solve in f32), and the one-forward-per-block
schedule of true-sequential GPTQ, with real MPI ranks.

- bf16 exports are byte-identical for P = 1, 2, 3 at one thread per rank
  (synthetic llama with bf16 weights, tinystories-656K); whether they are
  across thread counts is printed (oneDNN splits work by thread count).
- The default: bf16 where the CPU has bf16 instructions and the weights are
  bf16/fp16, f32 otherwise — an f32 checkpoint runs f32, and a bf16 CPU
  made to look like one without (DNNL_MAX_CPU_ISA=AVX512_CORE, oneDNN's own
  switch) runs f32, byte-identical to --compute-dtype f32; forced bf16 there
  runs the emulation, byte-identical across P too.
- Re-running every true-sequential stage from the block input
  (QS_FORWARD_RECOMPUTE=1, the old schedule) gives the same bytes, in f32 and
  bf16; the report counts 1 block-forward per block against the cost model's
  recompute count.
- A bf16 work dir is not resumed as f32 (the fingerprint names compute_dtype).
- The cost of bf16 against f32 in held-out NLL and KL to the original,
  printed for tinystories-656K and the synthetic model, and bounded.
"""
import filecmp
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402

np = qstest.need("numpy")
tokenizers = qstest.need("tokenizers")
TS = qstest.shared("models", "tinystories-656K")
TEXT = qstest.shared("text", "tinystories_valid_head.txt")
tmp = qstest.tmpdir()
one = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def model_files(d):
    return sorted(f for f in os.listdir(d) if f.endswith((".safetensors", ".json")))


def same(a, b):
    fa, fb = model_files(a), model_files(b)
    return fa == fb and all(filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False) for f in fa)


def run(np_, model, calib, tag, *extra, env=None, expect=0, launch=()):
    out, work = os.path.join(tmp, "o-" + tag), os.path.join(tmp, "w-" + tag)
    mpiexec = os.environ.get("QS_MPIEXEC", "mpirun")
    cmd = [mpiexec, "-np", str(np_), "--oversubscribe", *launch, qstest.qshard(), "run", "--model", model, "--calib",
           calib, "--work", work, "--out", out, "--micro-batch", "4", "--group-size", "32", *map(str, extra)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env or one)
    if expect is not None and p.returncode != expect:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}, expected {expect}\n{p.stderr}")
    return out, work, p.stdout + p.stderr  # the start line is progress (stdout)


def start_line(log):
    return next(l for l in log.splitlines() if l.startswith("qshard run: ") and "calibration tokens" in l)


def quality(model, ref, tokens):
    r = json.loads(qstest.run(["eval", "--model", model, "--ref", ref, "--tokens", tokens, "--json",
                               "--compute-dtype", "f32"]).stdout)
    return r["nll"], r["kl_mean"]


def token_rows(start_par, n_rows, seq):
    tok = tokenizers.Tokenizer.from_file(os.path.join(TS, "tokenizer.json"))
    pars = [p.strip() for p in open(TEXT, encoding="utf-8").read().split("\n\n") if p.strip()]
    rows = []
    for p in pars[start_par:]:
        ids = [1] + tok.encode(p, add_special_tokens=False).ids
        if len(ids) >= seq:
            rows.append(ids[:seq])
        if len(rows) == n_rows:
            break
    return np.array(rows, dtype=np.int32)


ts_calib, ts_eval = os.path.join(tmp, "ts-calib.npy"), os.path.join(tmp, "ts-eval.npy")
np.save(ts_calib, token_rows(0, 32, 64))
np.save(ts_eval, token_rows(3000, 32, 64))
# is bf16 native here? eval's default on a bf16 checkpoint says
native = json.loads(qstest.run(["eval", "--model", TS, "--tokens", ts_eval, "--json"]).stdout)["compute_dtype"] == "bf16"
print(f"bf16 instructions here: {'yes' if native else 'no'}")

rng = np.random.default_rng(3)
synth = os.path.join(tmp, "synth-bf16")
qstest.run(["synth", "--arch", "llama", "--layers", 3, "--hidden", 64, "--heads", 4, "--kv-heads", 2, "--ffn", 160,
            "--vocab", 256, "--seed", 7, "--dtype", "bf16", "--out", synth])
synth_f32 = os.path.join(tmp, "synth-f32")
qstest.run(["synth", "--arch", "llama", "--layers", 3, "--hidden", 64, "--heads", 4, "--kv-heads", 2, "--ffn", 160,
            "--vocab", 256, "--seed", 7, "--out", synth_f32])
s_calib, s_eval = os.path.join(tmp, "s-calib.npy"), os.path.join(tmp, "s-eval.npy")
np.save(s_calib, rng.integers(0, 256, size=(12, 32), dtype=np.int32))
np.save(s_eval, rng.integers(0, 256, size=(16, 32), dtype=np.int32))

# --- bf16: byte-identical across P at one thread per rank ---------------------------
for name, model, calib in (("synth", synth, s_calib), ("ts", TS, ts_calib)):
    outs = []
    for p in ((1, 2, 3) if name == "synth" else (1, 2)):  # tinystories has 2 blocks
        out, work, log = run(p, model, calib, f"{name}-bf16-p{p}", "--compute-dtype", "bf16")
        qstest.check(" bf16 compute" in start_line(log), f"{name} P={p}: {start_line(log)}")
        outs.append(out)
    for o in outs[1:]:
        qstest.check(same(outs[0], o), f"{name}: bf16 exports differ between {outs[0]} and {o}")
    print(f"{name}: bf16 exports identical for P = 1..{len(outs)} at 1 thread per rank")
# across thread counts (one rank, unbound, 1 vs 2 threads): reported, not required
two = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
o1, _, _ = run(1, synth, s_calib, "synth-bf16-t1", "--compute-dtype", "bf16", launch=("--bind-to", "none"))
o2, _, log2 = run(1, synth, s_calib, "synth-bf16-t2", "--compute-dtype", "bf16", launch=("--bind-to", "none"), env=two)
threads2 = [l for l in log2.splitlines() if "rank 0:" in l][0]
print(f"synth: bf16 exports across 1 and 2 threads ({threads2.strip()}): "
      f"{'identical' if same(o1, o2) else 'not identical'}")

# --- the default rule -------------------------------------------------------------------
_, _, log = run(1, synth, s_calib, "synth-auto")
qstest.check((" bf16 compute" if native else " f32 compute") in start_line(log), f"default on bf16 weights: {start_line(log)}")
if native:
    qstest.check(same(os.path.join(tmp, "o-synth-auto"), os.path.join(tmp, "o-synth-bf16-p1")), "default = explicit bf16")
_, _, log = run(1, synth_f32, s_calib, "synth32-auto")
qstest.check(" f32 compute" in start_line(log), f"default on f32 weights: {start_line(log)}")
noisa = dict(one, DNNL_MAX_CPU_ISA="AVX512_CORE")
_, _, log = run(1, synth, s_calib, "synth-noisa-auto", env=noisa)
qstest.check(" f32 compute" in start_line(log), f"default without bf16 instructions: {start_line(log)}")
run(1, synth, s_calib, "synth-f32", "--compute-dtype", "f32")
qstest.check(same(os.path.join(tmp, "o-synth-noisa-auto"), os.path.join(tmp, "o-synth-f32")),
             "the default without bf16 instructions is the f32 path")
emu = []
for p in (1, 2):
    out, _, log = run(p, synth, s_calib, f"synth-emu-p{p}", "--compute-dtype", "bf16", env=noisa)
    qstest.check("emulated" in start_line(log), f"bf16 without bf16 instructions is emulated: {start_line(log)}")
    emu.append(out)
qstest.check(same(emu[0], emu[1]), "emulated bf16: exports differ between P = 1 and 2")

# --- one forward per block: the same bytes as re-running from the block input -----------
plan = json.loads(qstest.run(["plan", synth, "--ranks", 1, "--calib-tokens", "12x32", "--json"]).stdout)
for dt in ("f32", "bf16"):
    a, wa, _ = run(1, synth, s_calib, f"synth-{dt}-carry", "--compute-dtype", dt)
    b, wb, _ = run(1, synth, s_calib, f"synth-{dt}-recompute", "--compute-dtype", dt,
                   env=dict(one, QS_FORWARD_RECOMPUTE="1"))
    qstest.check(same(a, b), f"{dt}: resuming stages from their boundary changed the export")
    ea = json.load(open(os.path.join(wa, "qshard_report.json")))["per_rank"][0]["forward_equivalents"]
    eb = json.load(open(os.path.join(wb, "qshard_report.json")))["per_rank"][0]["forward_equivalents"]
    qstest.check(abs(ea - 1.0) < 1e-9, f"{dt}: {ea} block forwards per block, expected 1")
    qstest.check(abs(eb - plan["forward_passes_recompute"]) < 1e-6,
                 f"{dt}: recompute ran {eb} forwards per block, the cost model says {plan['forward_passes_recompute']}")
    print(f"{dt}: block-forward equivalents per block {ea:.2f} (re-running each stage from the input: {eb:.2f})")

# --- the fingerprint knows the compute dtype ------------------------------------------------
_, _, log = run(1, synth, s_calib, "synth-bf16-p1", "--compute-dtype", "f32", expect=2)
qstest.check("compute_dtype" in log, f"resuming a bf16 work dir as f32: {log}")

# --- the cost of bf16 ----------------------------------------------------------------------
for name, model, calib, ev in (("tinystories-656K", TS, ts_calib, ts_eval), ("synthetic llama", synth, s_calib, s_eval)):
    tag = "ts" if model == TS else "synth"
    run(1, model, calib, f"{tag}-q32", "--compute-dtype", "f32")
    n32, k32 = quality(os.path.join(tmp, f"o-{tag}-q32"), model, ev)
    n16, k16 = quality(os.path.join(tmp, f"o-{tag}-bf16-p1"), model, ev)
    nfp, _ = quality(model, model, ev)
    print(f"{name}: held-out NLL fp {nfp:.5f}; GPTQ f32 compute {n32:.5f} (KL {k32:.5f}), bf16 compute {n16:.5f} "
          f"(KL {k16:.5f}): bf16 costs {n16 - n32:+.5f} nats NLL, {k16 - k32:+.5f} KL")
    qstest.check(abs(n16 - n32) < 0.02, f"{name}: bf16 moved NLL by {n16 - n32}")
    qstest.check(k16 < 1.25 * k32 + 1e-3, f"{name}: bf16 KL {k16} vs f32 {k32}")
print("ok")
