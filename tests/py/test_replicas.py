"""Data-parallel replicas inside a stage (`qshard run --replicas D`), real MPI ranks.

- A synthetic llama (6 blocks, 11 calibration rows in micro-batches of 2: 6
  chunks, the last one short): the exports (GPTQ shards, index, configs,
  GGUF) are byte-identical for (stages, replicas) = (1,1), (1,2), (2,1),
  (1,3), (3,1), exact schedule, act-order, group 32; also with static groups
  (GGUF Q4_0 from the GPTQ integers) and for (2,2).
- The replicas split the work: their forward flops add up to one rank's, and
  each runs about 1/D of them; the report lists every linear once.
- tinystories-656K (real): (1,2) equals (1,1).
- A (1,2) run SIGKILLed mid-run resumes — as (1,2) and as (3,1) — to the
  same bytes.
- The pipelined schedule with replicas: (2,2) equals (2,1) and (3,2) equals
  (3,1) (its exports depend on the stages, not on the replicas).
- --replicas with OmniQuant, more replicas than micro-batches, and a D that
  does not divide P exit 2 with one line.
"""
import filecmp
import json
import os
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402

np = qstest.need("numpy")
tmp = qstest.tmpdir()
MPIEXEC = os.environ.get("QS_MPIEXEC", "mpirun")
rnd = random.Random(int(os.environ.get("QS_TEST_SEED", "4242")))


def model_files(d):
    return sorted(f for f in os.listdir(d) if f.endswith((".safetensors", ".json", ".gguf")))


def same_exports(a, b):
    fa, fb = model_files(a), model_files(b)
    qstest.check(fa == fb, f"{a} and {b} hold different files: {fa} vs {fb}")
    qstest.check(any(f.endswith(".gguf") for f in fa) and "model.safetensors.index.json" in fa, f"{a}: {fa}")
    for f in fa:
        qstest.check(filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False), f"{f} differs: {a} vs {b}")


def cmd(stages, replicas, model, calib, tag, *extra):
    work, out = os.path.join(tmp, f"w-{tag}"), os.path.join(tmp, f"o-{tag}")
    return ([MPIEXEC, "-np", str(stages * replicas), "--oversubscribe", qstest.qshard(), "run", "--model", model,
             "--calib", calib, "--work", work, "--out", out, "--micro-batch", "2", "--replicas", str(replicas),
             "--formats", "gptq,gguf", *extra], work, out)


def quantize(stages, replicas, model, calib, tag, *extra):
    c, work, out = cmd(stages, replicas, model, calib, tag, *extra)
    p = subprocess.run(c, capture_output=True, text=True, timeout=600)
    qstest.check(p.returncode == 0, f"{' '.join(c)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return work, out


# ---- a synthetic llama: five decompositions -------------------------------------------------------
synth = os.path.join(tmp, "synth")
qstest.run(["synth", "--arch", "llama", "--layers", 6, "--hidden", 64, "--heads", 4, "--kv-heads", 2, "--ffn", 160,
            "--vocab", 256, "--seed", 5, "--out", synth])
calib = os.path.join(tmp, "calib.npy")
np.save(calib, np.random.default_rng(0).integers(0, 256, size=(11, 32), dtype=np.int32))

DYN = ["--act-order", "--group-size", "32", "--gguf-fallback", "f16"]  # act-order + dynamic groups: GGUF in F16
decomps = [(1, 1), (1, 2), (2, 1), (1, 3), (3, 1)]
outs = {}
for s, d in decomps:
    outs[(s, d)] = quantize(s, d, synth, calib, f"dyn-{s}x{d}", *DYN)
for sd in decomps[1:]:
    same_exports(outs[(1, 1)][1], outs[sd][1])
print(f"synthetic llama, act-order g32: exports identical for (S,D) = {decomps}")

STATIC = ["--act-order", "--static-groups", "--group-size", "32"]  # GGUF Q4_0 from the GPTQ integers
st = {sd: quantize(*sd, synth, calib, f"static-{sd[0]}x{sd[1]}", *STATIC) for sd in [(1, 1), (1, 3), (2, 2), (3, 1)]}
for sd in st:
    same_exports(st[(1, 1)][1], st[sd][1])
print("synthetic llama, act-order static groups g32: exports identical for (1,1), (1,3), (2,2), (3,1)")

# the pipelined schedule: its FP pass and the quantization both run on the replicas' chunks;
# its exports depend on the stages (which block gets an FP input), not on the replicas
pipe = {sd: quantize(*sd, synth, calib, f"pipe-{sd[0]}x{sd[1]}", "--schedule", "pipelined", *STATIC)
        for sd in [(2, 1), (2, 2), (3, 1), (3, 2)]}
same_exports(pipe[(2, 1)][1], pipe[(2, 2)][1])
same_exports(pipe[(3, 1)][1], pipe[(3, 2)][1])
qstest.check(not filecmp.cmp(os.path.join(pipe[(2, 1)][1], "model.gguf"), os.path.join(st[(1, 1)][1], "model.gguf"),
                             shallow=False), "the pipelined schedule should differ from the exact one")
print("pipelined: (2,2) identical to (2,1), (3,2) to (3,1)")

# ---- the replicas split the work and report each linear once ---------------------------------------
rep1 = json.load(open(os.path.join(outs[(1, 1)][0], "qshard_report.json")))
rep3 = json.load(open(os.path.join(outs[(1, 3)][0], "qshard_report.json")))
one = rep1["per_rank"][0]["forward_flops"]
flops = [r["forward_flops"] for r in rep3["per_rank"]]
qstest.check(abs(sum(flops) - one) <= 1e-9 * one, f"(1,3) forward flops {flops} do not add up to (1,1)'s {one}")
qstest.check(all(f < 0.45 * one for f in flops), f"(1,3): a replica ran more than its share of the forward: {flops} of {one}")
qstest.check([(r["stage"], r["replica"]) for r in rep3["per_rank"]] == [(0, 0), (0, 1), (0, 2)], rep3["per_rank"])
qstest.check(len(rep3["layers"]) == len(rep1["layers"]) == 6 * 7,
             f"report layers: (1,3) {len(rep3['layers'])}, (1,1) {len(rep1['layers'])}, expected 42")
for a, b in zip(rep1["layers"], rep3["layers"]):
    qstest.check(a["name"] == b["name"] and a["samples"] == b["samples"] == 11 * 32, f"{a} vs {b}")
    # the same H (trace) and the same codes: the loss differs only by the order its rows are summed
    qstest.check(a["h_trace"] == b["h_trace"], f"{a['name']}: H trace {a['h_trace']} vs {b['h_trace']}")
    qstest.check(abs(a["loss"] - b["loss"]) <= 1e-9 * max(abs(a["loss"]), 1e-30), f"{a['name']}: loss {a} vs {b}")
print(f"(1,3): forward flops per replica {[round(f / one, 3) for f in flops]} of one rank's; 42 linears reported once")

# ---- tinystories-656K: (1,2) = (1,1) ------------------------------------------------------------------
TS = qstest.shared("models", "tinystories-656K")
tokenizers = qstest.need("tokenizers")
text = open(qstest.shared("text", "tinystories_valid_head.txt"), encoding="utf-8").read()
tok = tokenizers.Tokenizer.from_file(os.path.join(TS, "tokenizer.json"))
ids = tok.encode(text[:100000], add_special_tokens=False).ids
ts_calib = os.path.join(tmp, "ts-calib.npy")
np.save(ts_calib, np.array(ids[: 24 * 64], dtype=np.int32).reshape(24, 64))
ts = [quantize(1, d, TS, ts_calib, f"ts-1x{d}", *DYN)[1] for d in (1, 2)]
same_exports(ts[0], ts[1])
print("tinystories-656K, act-order g32: (1,2) identical to (1,1)")

# ---- resume: a (1,2) run killed mid-run, resumed as (1,2) and as (3,1) -------------------------------


def blocks_done(work):
    try:
        return open(os.path.join(work, "journal.log")).read().count(" done xxh64=")
    except OSError:
        return 0


def run_killed(stages, replicas, tag):
    c, work, out = cmd(stages, replicas, synth, calib, tag, *DYN)
    p = subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    after, killed = rnd.randrange(1, 4), False
    while p.poll() is None:
        if not killed and blocks_done(work) >= after:
            # a rank, not mpirun (whose command line holds the same words)
            pids = subprocess.run(["pgrep", "-f", f"^[^ ]*qshard run .*--work {work} "], capture_output=True,
                                  text=True).stdout.split()
            if pids:
                os.kill(int(rnd.choice(pids)), signal.SIGKILL)
                killed = True
        time.sleep(0.005)
    p.communicate()
    # no rank of the killed run may still write the work dir when the resume starts
    t0 = time.time()
    while subprocess.run(["pgrep", "-f", f"^[^ ]*qshard run .*--work {work} "], capture_output=True).returncode == 0:
        qstest.check(time.time() - t0 < 60, f"{tag}: ranks of the killed run still alive after 60 s")
        time.sleep(0.05)
    return killed, blocks_done(work), work


for resume_as in ((1, 2), (3, 1)):
    tag = f"kill-{resume_as[0]}x{resume_as[1]}"
    killed, done, work = run_killed(1, 2, tag)
    qstest.check(killed and 0 < done < 6, f"{tag}: the run was not killed mid-run (killed={killed}, {done} blocks)")
    c, work2, out = cmd(*resume_as, synth, calib, tag, *DYN)
    p = subprocess.run(c, capture_output=True, text=True, timeout=600)
    qstest.check(p.returncode == 0, f"resume as {resume_as} failed ({p.returncode}):\n{p.stderr}")
    qstest.check("resumed" in open(os.path.join(work, "journal.log")).read(), "the journal records the resume")
    same_exports(outs[(1, 1)][1], out)
    print(f"killed a (1,2) run after {done} blocks; resumed as {resume_as}: identical")

# ---- what replicas refuse --------------------------------------------------------------------------------
for extra, want in ((["--method", "omniquant"], "OmniQuant trains each block on one rank"),):
    c, _, _ = cmd(1, 2, synth, calib, "refused", *extra)
    p = subprocess.run(c, capture_output=True, text=True, timeout=300)
    lines = [l for l in p.stderr.splitlines() if "error" in l]
    qstest.check(p.returncode == 2 and len(lines) == 1 and want in lines[0], f"{extra}: {p.returncode}\n{p.stderr}")
c, _, _ = cmd(1, 3, synth, calib, "few-chunks", "--micro-batch", "8")  # 11 rows: 2 micro-batches for 3 replicas
p = subprocess.run(c, capture_output=True, text=True, timeout=300)
qstest.check(p.returncode == 2 and "each replica needs at least one (lower --micro-batch)" in p.stderr, p.stderr)
c = [MPIEXEC, "-np", "3", "--oversubscribe", qstest.qshard(), "run", "--model", synth, "--calib", calib, "--work",
     os.path.join(tmp, "w-div"), "--out", os.path.join(tmp, "o-div"), "--replicas", "2", "--group-size", "32"]
p = subprocess.run(c, capture_output=True, text=True, timeout=300)
qstest.check(p.returncode == 2 and "--replicas 2 does not divide the 3 ranks" in p.stderr, p.stderr)
print("refused: omniquant, fewer micro-batches than replicas, D not dividing P")
