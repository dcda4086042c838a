"""What a run tells its operator, with real MPI ranks: --log-json, progress lines, --quiet, the report
of an interrupted run.

- --log-json FILE: every line parses as JSON (a JSON-lines reader); run_start first, run_end last;
  one block_done per block, from the rank the plan gave it, after its block_start; a checkpoint
  event per block whose xxh64 is the journal's; per-linear losses equal qshard_report.json's;
  phases fit in the block's interval; WORK/events.jsonl holds the same lines.
- stdout piped to a file: exactly one plain line per block (no carriage return, no escape
  sequence); on a terminal (a pty, under mpirun): a live line rewritten with "\\r"; --quiet:
  nothing on stdout or stderr, and the run still exports.
- SIGUSR1 mid-run: exit 3, stop_signal and run_end "interrupted" in the log, report.html says
  "interrupted"; `qshard report WORK --out F` works on it; the resumed run logs a second run_start
  (resumed) and the finished blocks as resumed.
"""
import json
import os
import pty
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402

np = qstest.need("numpy")
MODEL = qstest.shared("models", "tinystories-656K")
MPIEXEC = os.environ.get("QS_MPIEXEC", "mpirun")
tmp = qstest.tmpdir()
rng = np.random.default_rng(7)
calib = os.path.join(tmp, "calib.npy")
np.save(calib, rng.integers(3, 2048, size=(16, 64), dtype=np.int32))


def run_cmd(np_, work, out, *extra, model=MODEL, c=calib):
    return [MPIEXEC, "-np", str(np_), "--oversubscribe", qstest.qshard(), "run", "--model", model, "--calib", c,
            "--work", work, "--out", out, "--group-size", "32", "--micro-batch", "4", *[str(e) for e in extra]]


def read_jsonl(path):
    lines = open(path, encoding="utf-8").read().splitlines()
    return [json.loads(l) for l in lines]  # every line must parse


# ---- --log-json on 2 ranks, stdout to a file -------------------------------------------------------------
work, out, log = os.path.join(tmp, "w"), os.path.join(tmp, "o"), os.path.join(tmp, "events.jsonl")
stdout_file = os.path.join(tmp, "stdout.txt")
with open(stdout_file, "w") as f:
    p = subprocess.run(run_cmd(2, work, out, "--rtn-baseline", "--log-json", log, "--formats", "gptq,gguf"),
                       stdout=f, stderr=subprocess.PIPE, text=True, timeout=600)
qstest.check(p.returncode == 0, f"run failed: {p.stderr}")
ev = read_jsonl(log)
kinds = [e["event"] for e in ev]
qstest.check(kinds[0] == "run_start" and kinds[-1] == "run_end" and ev[-1]["status"] == "done", f"events: {kinds}")
qstest.check(all(isinstance(e["t"], (int, float)) for e in ev), "every event has a time")
start = ev[0]
owner = {b: r["rank"] for r in start["plan"] for b in range(r["first_block"], r["end_block"])}
qstest.check(start["blocks"] == 2 and start["ranks"] == 2 and sorted(owner) == [0, 1], f"run_start: {start}")
done = [e for e in ev if e["event"] == "block_done"]
qstest.check(sorted((e["block"], e["rank"]) for e in done) == sorted(owner.items()),
             f"one block_done per block from its rank: {[(e['block'], e['rank']) for e in done]}, plan {owner}")
for e in done:
    i = ev.index(e)
    starts = [j for j, x in enumerate(ev) if x["event"] == "block_start" and x["block"] == e["block"]]
    qstest.check(len(starts) == 1 and starts[0] < i, f"block {e['block']}: block_start before block_done")
    iv = e["t_end"] - e["t_start"]
    qstest.check(iv > 0 and sum(e["phases"].values()) <= iv * 1.01 + 1e-3,
                 f"block {e['block']}: phases {e['phases']} exceed its interval {iv}")
    qstest.check(e["phases"]["solve"] > 0 and e["phases"]["hessian"] > 0 and e["phases"]["forward"] > 0,
                 f"block {e['block']}: GPTQ has a forward, Hessians and a solve: {e['phases']}")
    qstest.check(e["peak_rss_bytes"] > 1 << 20 and not e["resumed"], f"block {e['block']}: {e}")
journal = open(os.path.join(work, "journal.log")).read()
for e in (e for e in ev if e["event"] == "checkpoint"):
    qstest.check(f"rank {e['rank']} block {e['block']} done xxh64={e['xxh64']}" in journal,
                 f"checkpoint event {e} is not the journal's")
qstest.check(sum(e["event"] == "checkpoint" for e in ev) == 2, "a checkpoint event per block")
qstest.check(sorted(e["format"] for e in ev if e["event"] == "export") == ["gguf", "gptq"], "an export event per format")
rep = json.load(open(os.path.join(work, "qshard_report.json")))
by_name = {l["name"]: l for l in rep["layers"]}
for e in done:
    for l in e["linears"]:
        r = by_name[l["name"]]
        qstest.check(l["loss"] == r["loss"] and l["loss_rtn"] == r["loss_rtn"], f"{l} vs qshard_report.json {r}")
qstest.check(open(os.path.join(work, "events.jsonl")).read() == open(log).read(),
             "WORK/events.jsonl and --log-json hold the same lines")
qstest.check(all(r["peak_rss_bytes"] > 0 for r in ev[-1]["per_rank"]) and len(ev[-1]["per_rank"]) == 2,
             "run_end gives every rank's peak memory")
qstest.check(os.path.exists(os.path.join(out, "report.html")), "the run writes OUT/report.html")
print(f"--log-json: {len(ev)} events: {', '.join(sorted(set(kinds)))}")

# one plain line per block on a non-terminal stdout
text = open(stdout_file).read()
qstest.check("\r" not in text and "\x1b" not in text, f"plain output has control characters: {text!r}")
lines = [l for l in text.splitlines() if re.match(r"qshard run: block \d+ of 2 quantized \(rank [01], ", l)]
qstest.check(len(lines) == 2 and all("tok/s" in l and "ETA" in l for l in lines), f"one line per block:\n{text}")
print("plain stdout: one line per block")

# ---- --quiet -------------------------------------------------------------------------------------------
q = subprocess.run(run_cmd(2, os.path.join(tmp, "wq"), os.path.join(tmp, "oq"), "--quiet"), capture_output=True,
                   text=True, timeout=600)
qstest.check(q.returncode == 0 and q.stdout == "" and q.stderr == "",
             f"--quiet printed something: rc {q.returncode}\nstdout {q.stdout!r}\nstderr {q.stderr!r}")
qstest.check(os.path.exists(os.path.join(tmp, "oq", "model.safetensors.index.json")), "--quiet run exported")
print("--quiet: nothing printed")


# ---- a terminal: the live line ---------------------------------------------------------------------------
def on_pty(cmd):
    """Runs cmd with its stdout on a pseudo-terminal (as `mpirun ...` typed in a shell); returns the bytes."""
    m, s = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=s, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(s)
    buf = b""
    while True:
        try:
            d = os.read(m, 65536)
        except OSError:
            break
        if not d:
            break
        buf += d
    proc.wait(timeout=600)
    os.close(m)
    qstest.check(proc.returncode == 0, f"{cmd} failed: {proc.stderr.read()}")
    return buf.decode("utf-8", "replace")


live = on_pty(run_cmd(2, os.path.join(tmp, "wl"), os.path.join(tmp, "ol")))
qstest.check("\r" in live and "\x1b[K" in live and re.search(r"\rqshard run: 2/2 blocks, .*tok/s, ETA", live),
             f"no live line on a terminal: {live!r}")
qstest.check(not re.search(r"block \d+ of 2 quantized", live), "a terminal gets the live line, not per-block lines")
plain = on_pty(run_cmd(2, os.path.join(tmp, "wp"), os.path.join(tmp, "op"), "--progress", "plain"))
qstest.check("\x1b[K" not in plain and len(re.findall(r"block \d+ of 2 quantized", plain)) == 2,
             f"--progress plain on a terminal: {plain!r}")
print("terminal: live line; --progress plain: lines")

# ---- SIGUSR1 mid-run: the report of an interrupted run, then resume ----------------------------------------
synth = os.path.join(tmp, "synth")
qstest.run(["synth", "--arch", "llama", "--layers", 6, "--hidden", 256, "--heads", 8, "--kv-heads", 4, "--ffn", 768,
            "--vocab", 512, "--seed", 3, "--out", synth])
scal = os.path.join(tmp, "synth-calib.npy")
np.save(scal, rng.integers(0, 512, size=(24, 64), dtype=np.int32))
work, out, log = os.path.join(tmp, "ws"), os.path.join(tmp, "os"), os.path.join(tmp, "stop.jsonl")
cmd = run_cmd(2, work, out, "--log-json", log, model=synth, c=scal)
proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
deadline = time.time() + 300
while time.time() < deadline and proc.poll() is None:
    if os.path.exists(log) and '"event":"block_done"' in open(log).read():
        proc.send_signal(signal.SIGUSR1)  # mpirun forwards it to every rank
        break
    time.sleep(0.02)
_, err = proc.communicate(timeout=300)
qstest.check(proc.returncode == 3, f"SIGUSR1 after the first block: exit {proc.returncode}, expected 3\n{err}")
ev = read_jsonl(log)
kinds = [e["event"] for e in ev]
n_done = kinds.count("block_done")
qstest.check("stop_signal" in kinds and ev[-1]["event"] == "run_end" and ev[-1]["status"] == "interrupted",
             f"events of a stopped run: {kinds}")
qstest.check(1 <= n_done < 6, f"{n_done} blocks done before the stop")
page = open(os.path.join(out, "report.html"), encoding="utf-8").read()
qstest.check("interrupted (resumable)" in page and f"{n_done} / 6" in page, "report.html of the interrupted run")
mine = os.path.join(tmp, "mine.html")
p = qstest.run(["report", work, "--out", mine])
qstest.check(p.stdout.strip() == mine and "interrupted (resumable)" in open(mine, encoding="utf-8").read(),
             "qshard report WORK --out FILE")
p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
qstest.check(p.returncode == 0, f"resume failed: {p.stderr}")
ev2 = read_jsonl(log)  # --log-json starts a new file per run
qstest.check(ev2[0]["event"] == "run_start" and ev2[0]["resumed"] and ev2[-1]["status"] == "done", "resumed run")
res = sorted(e["block"] for e in ev2 if e["event"] == "block_done" and e["resumed"])
qstest.check(len(res) == n_done, f"blocks finished before the stop come back resumed: {res}, {n_done} were done")
allev = read_jsonl(os.path.join(work, "events.jsonl"))  # the work dir keeps both attempts
qstest.check([e["event"] for e in allev].count("run_start") == 2, "WORK/events.jsonl appends across attempts")
page = open(os.path.join(out, "report.html"), encoding="utf-8").read()
qstest.check("finished" in page and "attempts (resumed)" in page and "class=\"mark resumed\"" in page,
             "report.html after the resume: finished, 2 attempts, resumed blocks drawn")
print(f"SIGUSR1: exit 3 after {n_done} block(s), interrupted report, resumed with {len(res)} resumed block(s)")
print("ok")
