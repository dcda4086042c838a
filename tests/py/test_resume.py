"""Crash-safe checkpoints and resume, with real MPI ranks.

- SIGKILL of a random rank at a random moment (10 times across tinystories-656K
  and a synthetic llama, P = 2 and 3); running the same command again resumes
  and the exported model files are byte-identical to an uninterrupted run.
- A truncated and a bit-flipped block checkpoint are detected (warning) and
  recomputed, with identical exports.
- SIGUSR1 stops at a block boundary with exit code 3; the journal says so.
- A work dir made with other options is refused, naming what differs.
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
rnd = random.Random(int(os.environ.get("QS_TEST_SEED", "12345")))


def model_files(d):
    return sorted(f for f in os.listdir(d) if f.endswith(".safetensors") or f.endswith(".json"))


def same_exports(a, b):
    fa, fb = model_files(a), model_files(b)
    qstest.check(fa == fb, f"{a} and {b} hold different files: {fa} vs {fb}")
    for f in fa:
        qstest.check(filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False), f"{f} differs: {a} vs {b}")


def cmd(np_, model, calib, work, out):
    return [MPIEXEC, "-np", str(np_), "--oversubscribe", qstest.qshard(), "run", "--model", model, "--calib", calib,
            "--work", work, "--out", out, "--micro-batch", "4", "--group-size", "32", "--act-order", "--static-groups"]


def rank_pids(work):
    p = subprocess.run(["pgrep", "-f", f"qshard run .*--work {work} "], capture_output=True, text=True)
    return [int(x) for x in p.stdout.split()]


def blocks_done(work):
    try:
        return open(os.path.join(work, "journal.log")).read().count(" done xxh64=")
    except OSError:
        return 0


def run_killed(np_, model, calib, work, out, after_blocks, delay):
    """Starts a run and SIGKILLs one random rank once `after_blocks` blocks are
    journaled plus `delay` seconds: a random moment that is still mid-run on a
    loaded machine (a wall-clock deadline alone would often come too late)."""
    p = subprocess.Popen(cmd(np_, model, calib, work, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, t_reached = False, None
    while p.poll() is None:
        if not killed:
            if t_reached is None and blocks_done(work) >= after_blocks:
                t_reached = time.time()
            if t_reached is not None and time.time() - t_reached >= delay:
                pids = rank_pids(work)
                if pids:
                    os.kill(rnd.choice(pids), signal.SIGKILL)
                    killed = True
        time.sleep(0.01)
    p.communicate()
    return killed, p.returncode


def wait_ranks_gone(work, timeout=60):
    """Ranks orphaned by a SIGKILLed mpirun (the pgrep above also matches
    mpirun's own command line) live on until they notice; rank 0 of them
    still holds the work dir's lock, so a resume started at once is refused
    (exit 2, by design). Wait for them as an operator would; kill what is
    left after `timeout` s. Returns the seconds waited."""
    t0 = time.time()
    while rank_pids(work) and time.time() - t0 < timeout:
        time.sleep(0.05)
    for pid in rank_pids(work):
        os.kill(pid, signal.SIGKILL)
    return time.time() - t0


def finish(np_, model, calib, work, out):
    p = subprocess.run(cmd(np_, model, calib, work, out), capture_output=True, text=True, timeout=600)
    qstest.check(p.returncode == 0, f"resume failed ({p.returncode}):\n{p.stderr}")
    return p


# --- models and their uninterrupted references ------------------------------------------
tokenizers = qstest.need("tokenizers")
TS = qstest.shared("models", "tinystories-656K")
text = open(qstest.shared("text", "tinystories_valid_head.txt"), encoding="utf-8").read()
tok = tokenizers.Tokenizer.from_file(os.path.join(TS, "tokenizer.json"))
ids = tok.encode(text[:200000], add_special_tokens=False).ids
ts_calib = os.path.join(tmp, "ts-calib.npy")
np.save(ts_calib, np.array(ids[: 64 * 64], dtype=np.int32).reshape(64, 64))

synth = os.path.join(tmp, "synth")
qstest.run(["synth", "--arch", "llama", "--layers", 6, "--hidden", 256, "--heads", 8, "--kv-heads", 4, "--ffn", 768,
            "--vocab", 512, "--seed", 3, "--out", synth])
synth_calib = os.path.join(tmp, "synth-calib.npy")
np.save(synth_calib, np.random.default_rng(1).integers(0, 512, size=(24, 64), dtype=np.int32))

cases = {"tinystories": (TS, ts_calib), "synth": (synth, synth_calib)}
refs, durations = {}, {}
for name, (model, calib) in cases.items():
    for np_ in (2, 3) if name == "synth" else (2,):
        work, out = os.path.join(tmp, f"ref-{name}-{np_}-w"), os.path.join(tmp, f"ref-{name}-{np_}-o")
        t0 = time.time()
        finish(np_, model, calib, work, out)
        durations[(name, np_)] = time.time() - t0
        refs[(name, np_)] = out
print("uninterrupted:", {f"{k[0]}/P{k[1]}": round(v, 1) for k, v in durations.items()})

# --- 10 random SIGKILLs, each resumed -------------------------------------------------------
plan = [("tinystories", 2)] * 3 + [("synth", 2)] * 4 + [("synth", 3)] * 3
kills = 0
for i, (name, np_) in enumerate(plan):
    model, calib = cases[(name)]
    work, out = os.path.join(tmp, f"kill{i}-w"), os.path.join(tmp, f"kill{i}-o")
    n_blocks = 2 if name == "tinystories" else 6
    after = rnd.randrange(0, n_blocks - 1)
    delay = rnd.uniform(0, durations[(name, np_)] / n_blocks / 2)
    killed, rc = run_killed(np_, model, calib, work, out, after, delay)
    kills += killed
    waited = wait_ranks_gone(work)
    done = len(os.listdir(os.path.join(work, "blocks"))) if os.path.isdir(os.path.join(work, "blocks")) else 0
    finish(np_, model, calib, work, out)
    same_exports(refs[(name, np_)], out)
    print(f"kill {i}: {name} P={np_} after {after} blocks + {delay:.2f}s killed={killed} rc={rc} "
          f"blocks done before resume={done} (orphans gone after {waited:.2f} s): identical")
qstest.check(kills >= 8, f"only {kills} of 10 runs were killed mid-run; the runs are too short to test resume")

# --- corrupted checkpoints are recomputed ------------------------------------------------------
work = os.path.join(tmp, "kill4-w")
out = os.path.join(tmp, "kill4-o")
blocks = sorted(os.listdir(os.path.join(work, "blocks")))
a, b = os.path.join(work, "blocks", blocks[1]), os.path.join(work, "blocks", blocks[-1])
data = bytearray(open(a, "rb").read())
data[len(data) // 2] ^= 0x04
open(a, "wb").write(data)
data = open(b, "rb").read()
open(b, "wb").write(data[: len(data) // 2])
p = finish(2, synth, synth_calib, work, out)
warnings = [l for l in p.stderr.splitlines() if "warning" in l and "recomputing" in l]
qstest.check(len(warnings) == 2, f"expected 2 recompute warnings:\n{p.stderr}")
same_exports(refs[("synth", 2)], out)
print("bit flip + truncation: recomputed, identical")

# --- SIGUSR1: stop at a block boundary, exit 3, then resume ----------------------------------------
work, out = os.path.join(tmp, "usr1-w"), os.path.join(tmp, "usr1-o")
p = subprocess.Popen(cmd(2, synth, synth_calib, work, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
time.sleep(durations[("synth", 2)] * 0.4)
p.send_signal(signal.SIGUSR1)  # mpirun forwards SIGUSR1 to every rank
_, err = p.communicate(timeout=300)
qstest.check(p.returncode == 3, f"SIGUSR1 should exit 3 (interrupted, resumable), got {p.returncode}:\n{err}")
journal = open(os.path.join(work, "journal.log")).read()
qstest.check("interrupted" in journal, "the journal records the interruption")
qstest.check(not os.path.exists(os.path.join(out, "model.safetensors.index.json")), "no index after a stop")
finish(2, synth, synth_calib, work, out)
same_exports(refs[("synth", 2)], out)
qstest.check("resumed" in open(os.path.join(work, "journal.log")).read(), "the journal records the resume")
print("SIGUSR1: exit 3, resumed, identical")

# --- a different run in the same work dir is refused ----------------------------------------------------
bad = cmd(2, synth, synth_calib, work, out)
bad[bad.index("--group-size") + 1] = "64"
p = subprocess.run(bad, capture_output=True, text=True)
qstest.check(p.returncode == 2 and "group_size: 32 → 64" in p.stderr, f"fingerprint mismatch: {p.returncode} {p.stderr}")
print("ok")
