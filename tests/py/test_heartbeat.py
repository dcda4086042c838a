"""The heartbeat on one host (no namespaces, no root): a rank that stops
answering is lost.

3 local ranks, exact schedule, --heartbeat-timeout 4. Once two blocks are
journaled, rank 1 gets SIGSTOP: its process and its connections stay, only
its frames stop (what a hung host or a cut link looks like to the others).
Ranks 0 and 2 exit within T + 3 s with code 3 and one line naming rank 1
("no heartbeat"); mpirun ends; the same command resumes to exports
byte-identical to an uninterrupted run. Then the same with SIGKILL of rank 0
(the hub): ranks 1 and 2 say at once that rank 0's connection closed (or was
reset).
tests/py/test_multihost.py does the same across hosts made of namespaces.
"""
import filecmp
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402

RANK_SH = qstest.source("tests", "multihost", "rank.sh")
MPIEXEC = os.environ.get("QS_MPIEXEC", "mpirun")
T = 4
tmp = qstest.tmpdir("qs-heartbeat-")
env1 = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")

model = os.path.join(tmp, "model")
qstest.run(["synth", "--arch", "llama", "--layers", 6, "--hidden", 256, "--heads", 8, "--kv-heads", 4, "--ffn", 768,
            "--vocab", 512, "--seed", 9, "--out", model])
calib = os.path.join(tmp, "calib.npy")
header = "{'descr': '<i4', 'fortran_order': False, 'shape': (24, 64), }"
header += " " * (63 - (10 + len(header)) % 64) + "\n"
with open(calib, "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
    f.write(b"".join(((i * 7919 + 13) % 512).to_bytes(4, "little") for i in range(24 * 64)))


def args(work, out):
    return [qstest.qshard(), "run", "--model", model, "--calib", calib, "--work", work, "--out", out,
            "--micro-batch", 4, "--group-size", 32, "--act-order", "--heartbeat-timeout", T]


def exports(d):
    return sorted(f for f in os.listdir(d) if f.endswith((".safetensors", ".json")))


def same(a, b):
    qstest.check(exports(a) == exports(b) and exports(a), f"{a} vs {b}")
    for f in exports(a):
        qstest.check(filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False), f"{f} differs")


def blocks_done(work):
    try:
        return open(os.path.join(work, "journal.log")).read().count(" done xxh64=")
    except OSError:
        return 0


def rank_pid(work, rank):
    """The qshard process of `rank` (its environment names it)."""
    out = subprocess.run(["pgrep", "-f", f"qshard run .*--work {work} "], capture_output=True, text=True).stdout
    for pid in out.split():
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            argv0 = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0]
        except OSError:
            continue
        # the qshard process itself, not rank.sh around it
        if os.path.basename(argv0) == b"qshard" and f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return int(pid)
    return None


mpi = [MPIEXEC, "--oversubscribe", "-np", "3", "-x", "OMP_NUM_THREADS=1", "-x", "OPENBLAS_NUM_THREADS=1"]
ref = os.path.join(tmp, "ref-out")
p = subprocess.run(mpi + [str(a) for a in args(os.path.join(tmp, "ref-work"), ref)], capture_output=True, text=True,
                   env=env1, timeout=300)
qstest.check(p.returncode == 0, f"reference run failed:\n{p.stderr}")

# a killed process's socket closes (FIN), or resets (RST) when frames were still unread in it
for what, victim, sig, bound, says in (("stopped", 1, signal.SIGSTOP, T + 3.0, ("no heartbeat for",)),
                                       ("killed", 0, signal.SIGKILL, 3.0, ("connection closed", "connection was reset"))):
    work, out, rdir = (os.path.join(tmp, f"{what}-{x}") for x in ("work", "out", "ranks"))
    os.makedirs(rdir)
    p = subprocess.Popen(mpi + [RANK_SH, rdir] + [str(a) for a in args(work, out)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env1)
    t0 = time.time()
    while blocks_done(work) < 2 and p.poll() is None and time.time() - t0 < 200:
        time.sleep(0.01)
    pid = rank_pid(work, victim)
    qstest.check(pid is not None and p.poll() is None, f"{what}: no rank {victim} to stop mid-run")
    t_fail = time.time()
    os.kill(pid, sig)
    try:
        mp_out, _ = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"{what}: mpirun still running 120 s after the failure")
    for r in (r for r in range(3) if r != victim):
        err = open(os.path.join(rdir, f"rank{r}.err")).read()
        code, when = open(os.path.join(rdir, f"rank{r}.rc")).read().split()
        lost = [line for line in err.splitlines() if " lost rank " in line]
        qstest.check(len(lost) == 1 and f"rank {r} lost rank {victim} on host" in lost[0] and any(w in lost[0] for w in says),
                     f"{what}: rank {r}'s stderr:\n{err}")
        qstest.check(int(code) == 3, f"{what}: rank {r} exited {code}, expected 3")
        dt = float(when) - t_fail
        qstest.check(dt <= bound, f"{what}: rank {r} exited {dt:.1f} s after the failure (bound {bound} s)")
        print(f"{what}: rank {r} exited {dt:.2f} s after, code 3: {lost[0][:120]}...")
    qstest.check(p.returncode != 0, f"{what}: mpirun exited 0")
    try:
        os.kill(pid, signal.SIGKILL)  # a stopped rank mpirun could not end
    except ProcessLookupError:
        pass
    r = subprocess.run(mpi + [str(a) for a in args(work, out)], capture_output=True, text=True, env=env1, timeout=300)
    qstest.check(r.returncode == 0, f"{what}: resume failed:\n{r.stderr}")
    same(ref, out)
    print(f"{what}: resumed, exports byte-identical")
print("ok")
