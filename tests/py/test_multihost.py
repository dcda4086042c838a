"""Real multi-host runs: hosts made of network namespaces on this machine
(tests/multihost/netns.py), Open MPI between them over TCP.

1. Two hosts, one rank each, exact schedule: the exports (GPTQ safetensors,
   index, configs, GGUF) are byte-identical to a single-host run, as 2
   stages × 1 replica and as 1 stage × 2 replicas (`--replicas 2`).
2. Three hosts; every process of host 2 (rank 1) is killed mid-run: ranks 0
   and 2 exit within 3 s with code 3, each with one line naming rank 1 and its
   host; mpirun ends; the same command resumes to byte-identical exports.
3. Three hosts; host 1's link goes down mid-run (rank 0, the heartbeat's hub:
   its packets vanish, nothing resets): ranks 1 and 2 exit within the
   heartbeat timeout T = 5 s plus 3 s with code 3, each with one line naming
   rank 0 and its host; mpirun ends; the link comes back, the host restarts
   (its leftover processes killed), and the same command resumes to
   byte-identical exports.

Skips (77) where namespaces cannot be made (not root, no iproute2, no mpirun).
The namespaces are removed at the end, also when a check fails.
"""
import filecmp
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "multihost"))
import qstest  # noqa: E402
import netns  # noqa: E402

why = netns.why_not()
if why:
    qstest.skip(why)
netns.reap_stale()
# a ctest timeout sends SIGTERM: leave through the clean-up below
signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
launched = []

tmp = qstest.tmpdir("qs-multihost-")
os.chmod(tmp, 0o755)
T = 5  # --heartbeat-timeout of the failure cases
t_start = time.time()
timings = {}


def note(what, t0):
    timings[what] = time.time() - t0


# ---- the model: a synthetic llama of 6 blocks, 24 × 64 calibration tokens --------------------
model = os.path.join(tmp, "model")
qstest.run(["synth", "--arch", "llama", "--layers", 6, "--hidden", 256, "--heads", 8, "--kv-heads", 4, "--ffn", 768,
            "--vocab", 512, "--seed", 5, "--out", model])


def write_tokens(path, rows, cols, vocab, seed):
    """An int32 .npy of pseudo-random token ids (no NumPy needed)."""
    header = "{'descr': '<i4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, cols)
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    x, ids = seed, bytearray()
    for _ in range(rows * cols):
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
        ids += ((x >> 33) % vocab).to_bytes(4, "little")
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + ids)


calib = os.path.join(tmp, "calib.npy")
write_tokens(calib, 24, 64, 512, 7)


def run_args(work, out, extra=()):
    return ["run", "--model", model, "--calib", calib, "--work", work, "--out", out, "--micro-batch", 4,
            "--group-size", 32, "--act-order", "--static-groups", "--formats", "gptq,gguf"] + list(extra)


def exports(d):
    # qshard.h5 is left out on purpose: it holds timings, so two runs differ (issue 15, item 12)
    return sorted(f for f in os.listdir(d) if f.endswith((".safetensors", ".json", ".gguf")))


def same_exports(a, b):
    fa, fb = exports(a), exports(b)
    qstest.check(fa == fb and "model.gguf" in fa and "model.safetensors.index.json" in fa, f"{a}: {fa} vs {b}: {fb}")
    for f in fa:
        qstest.check(filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False), f"{f} differs: {a} vs {b}")


def blocks_done(work):
    try:
        return open(os.path.join(work, "journal.log")).read().count(" done xxh64=")
    except OSError:
        return 0


t0 = time.time()
ref_out = os.path.join(tmp, "ref-out")
one_thread = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")  # as the ranks on the hosts
qstest.run(run_args(os.path.join(tmp, "ref-work"), ref_out), env=one_thread)
note("single-host reference (1 rank)", t0)

cl = netns.Cluster(3, tmp)
try:
    cl.make()
    if not cl.can_talk():
        qstest.skip("namespaces were made but the bridge between them does not forward TCP "
                    "(br_netfilter with a DROP policy?)")
    node = dict(zip(range(3), cl.names))

    def launch(n, work, out, rank_dir, extra=()):
        os.makedirs(rank_dir, exist_ok=True)
        argv = [qstest.qshard()] + run_args(work, out, extra)
        log = open(os.path.join(rank_dir, "mpirun.log"), "w")
        p = subprocess.Popen(cl.mpirun(n, argv, rank_dir), stdout=log, stderr=subprocess.STDOUT)
        launched.append(p)
        return p, log

    def finish(p, log, timeout, what):
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise AssertionError(f"{what}: mpirun still running after {timeout} s:\n" + open(log.name).read()[-3000:])
        finally:
            log.close()
        return p.returncode

    def rank_report(rank_dir, r):
        err = open(os.path.join(rank_dir, f"rank{r}.err")).read()
        rc_path = os.path.join(rank_dir, f"rank{r}.rc")
        qstest.check(os.path.exists(rc_path), f"rank {r} left no exit record:\n{err}")
        code, when = open(rc_path).read().split()
        return int(code), float(when), err

    def run_ok(n, work, out, what, extra=()):
        rank_dir = os.path.join(tmp, what.replace(" ", "-"))
        t0 = time.time()
        p, log = launch(n, work, out, rank_dir, extra)
        rc = finish(p, log, 120, what)
        qstest.check(rc == 0, f"{what}: mpirun exited {rc}:\n" + open(log.name).read()[-3000:] + "".join(
            open(os.path.join(rank_dir, f)).read() for f in sorted(os.listdir(rank_dir)) if f.endswith(".err")))
        note(what, t0)

    # ---- 1. two hosts, one rank each: the same bytes as one host -----------------------------
    out2 = os.path.join(tmp, "two-hosts-out")
    run_ok(2, os.path.join(tmp, "two-hosts-work"), out2, "two hosts")
    same_exports(ref_out, out2)
    print("two hosts: exports byte-identical to the single-host run")
    # one stage of two replicas across the hosts (the Hessian tree, its broadcast and
    # the all-gather of the quantized rows cross the link): the same bytes as (2,1)
    out12 = os.path.join(tmp, "two-hosts-replicas-out")
    run_ok(2, os.path.join(tmp, "two-hosts-replicas-work"), out12, "two hosts replicas", ["--replicas", 2])
    same_exports(out2, out12)
    print("two hosts, 1 stage x 2 replicas: exports byte-identical to 2 stages x 1")

    def failure_case(what, victim, inject, bound, restart, says):
        """Starts 3 ranks on 3 hosts, injects a failure on host `victim` once
        2 blocks are journaled, checks the survivors, then resumes."""
        work, out = os.path.join(tmp, f"{what}-work"), os.path.join(tmp, f"{what}-out")
        rank_dir = os.path.join(tmp, f"{what}-ranks")
        extra = ["--heartbeat-timeout", T]
        t0 = time.time()
        p, log = launch(3, work, out, rank_dir, extra)
        while blocks_done(work) < 2:
            if p.poll() is not None:
                raise AssertionError(f"{what}: the run ended before the failure:\n" + open(log.name).read()[-3000:])
            if time.time() - t0 > 120:
                p.kill()
                raise AssertionError(f"{what}: 2 blocks not done after 120 s")
            time.sleep(0.01)
        t_fail = time.time()
        inject(victim)
        rc = finish(p, log, 90, what)
        t_mpirun = time.time() - t_fail
        survivors = [r for r in range(3) if r != victim]
        for r in survivors:
            code, when, err = rank_report(rank_dir, r)
            lost = [line for line in err.splitlines() if " lost rank " in line]
            want = f"rank {r} lost rank {victim} on host {node[victim]} ({cl.addrs[victim]})"
            qstest.check(len(lost) == 1 and want in lost[0] and any(w in lost[0] for w in says),
                         f"{what}: rank {r} should say once '{want}', its stderr:\n{err}")
            qstest.check(err.strip().splitlines()[-1] == lost[0], f"{what}: rank {r}'s last line is not the loss:\n{err}")
            qstest.check(code == 3, f"{what}: rank {r} exited {code}, expected 3 (resumable)")
            qstest.check(when - t_fail <= bound, f"{what}: rank {r} exited {when - t_fail:.1f} s after the failure "
                         f"(bound {bound} s)")
            print(f"{what}: rank {r} exited {when - t_fail:.2f} s after the failure, code {code}: {lost[0]}")
        qstest.check(rc != 0, f"{what}: mpirun exited 0 after losing a host")
        print(f"{what}: mpirun exited {rc} after {t_mpirun:.1f} s")
        note(f"{what}: failure to mpirun's exit", t_fail)
        restart(victim)
        run_ok(3, work, out, f"{what} resumed", extra)
        same_exports(ref_out, out)
        print(f"{what}: resumed; exports byte-identical to the single-host run")

    # ---- 2. a host's processes killed (rank 1) ------------------------------------------------
    # a killed process's connection closes, or resets when frames were still unread in it
    failure_case("killed", 1, cl.kill_host, 3.0, lambda k: None, ("connection closed", "connection was reset"))

    # ---- 3. a host's link down (rank 0, the heartbeat's hub) -----------------------------------
    def reboot(k):
        cl.link_up(k)
        cl.kill_host(k)  # what was left on the cut-off host (its Open MPI daemon)

    failure_case("link-down", 0, cl.link_down, T + 3.0, reboot, ("no heartbeat for",))

finally:
    for p in launched:
        if p.poll() is None:
            p.kill()
            p.wait()
    cl.cleanup()

print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + f"; total {time.time() - t_start:.1f} s")
print("ok")
