#!/usr/bin/env python3
"""slurm_harness.py — a real, single-host Slurm cluster for qshard's tests.

Starts munged, slurmctld and slurmd on loopback inside a temporary directory,
with their own munge key and slurm.conf: one node (its CPUs and RealMemory are
what `slurmd -C` measures on this machine), select/cons_tres,
proctrack/linuxproc, task/none, no accounting, free TCP ports. Nothing from
systemd is used and nothing outside the directory is written; clients find the
cluster through SLURM_CONF (see SlurmHarness.env()).

Teardown is by PID: every job is cancelled, then the daemons we started, then
any process that still carries this harness's marker variable in its
environment (slurmstepd and job tasks inherit it). It runs on stop(), on exit
(atexit, SIGTERM) and, should the test process be killed outright (a ctest
timeout sends SIGKILL), from a small watchdog process that waits for the test
process to die.

Use from Python:
    with SlurmHarness() as h:          # raises HarnessUnavailable(why)
        h.run(["srun", "hostname"])
Or from a shell (prints `export SLURM_CONF=...`):
    python3 slurm/testing/slurm_harness.py start --dir /tmp/qs-slurm
    python3 slurm/testing/slurm_harness.py stop --dir /tmp/qs-slurm

Needs root (slurmd starts jobs as their user, so it must run as root) and
Debian's slurm-wlm and munge packages (scripts/install_deps.sh).
"""
import argparse
import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

MARKER = "QS_SLURM_HARNESS"   # env var carried by every process of one harness
NODE = "qsnode"
PARTITION = "debug"


class HarnessUnavailable(Exception):
    """Slurm cannot be started here; the message says why (tests skip with it)."""


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as dead (it is only waiting to be reaped)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _marked_pids(marker_value):
    """PIDs of processes whose environment holds MARKER=marker_value."""
    want = f"{MARKER}={marker_value}".encode()
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if want in env:
            pids.append(int(d))
    return pids


def _node_hardware():
    """CPUs, sockets, cores, threads and RealMemory as slurmd itself sees them."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30)
    fields = {}
    for tok in out.stdout.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            fields[k] = v
    keys = ["CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory"]
    if not all(k in fields for k in keys):
        raise HarnessUnavailable(f"`slurmd -C` did not describe the node: {out.stdout.strip()} {out.stderr.strip()}")
    return " ".join(f"{k}={fields[k]}" for k in keys), int(fields["CPUs"])


class SlurmHarness:
    def __init__(self, base=None, keep=False, watchdog=True):
        self.base = base
        self.keep = keep            # keep the directory (logs) after stop()
        self.use_watchdog = watchdog
        self.procs = {}             # name -> Popen (only while we are the parent)
        self.cpus = 0
        self.started = False
        self._watchdog = None

    # ---- paths -------------------------------------------------------------
    def path(self, *parts):
        return os.path.join(self.base, *parts)

    @property
    def conf(self):
        return self.path("etc", "slurm.conf")

    def env(self, extra=None):
        """The environment for Slurm clients (sbatch, srun, squeue ...)."""
        e = dict(os.environ)
        e["SLURM_CONF"] = self.conf
        e[MARKER] = self.base
        # the harness's own variables must not leak into jobs from an outer allocation
        for k in list(e):
            if k.startswith("SLURM_") and k != "SLURM_CONF":
                del e[k]
        if extra:
            e.update(extra)
        return e

    def run(self, args, check=True, timeout=120, **kw):
        p = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=self.env(),
                           timeout=timeout, **kw)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args))} exited {p.returncode}\n"
                                 f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        return p

    def log_tail(self, n=30):
        out = []
        for name in ("munge/munged.log", "log/slurmctld.log", "log/slurmd.log"):
            p = self.path(name)
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    lines = f.readlines()[-n:]
                out.append(f"--- {name}\n" + "".join(lines))
        return "\n".join(out)

    # ---- start -------------------------------------------------------------
    def _check_prereqs(self):
        if os.geteuid() != 0:
            raise HarnessUnavailable("needs root: slurmd must run as root to start jobs (CI runs as root)")
        for prog in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo"):
            if not shutil.which(prog):
                raise HarnessUnavailable(f"{prog} is not installed (scripts/install_deps.sh installs slurm-wlm and munge)")

    def _write_conf(self):
        hw, self.cpus = _node_hardware()
        ctld_port, slurmd_port = _free_port(), _free_port()
        # Job ids of their own: two test clusters on one machine (several test runs
        # at once) that both run job 1 collide in PMIx's per-job files under /tmp,
        # and srun then fails the task launch (and exits 0).
        first_job = random.SystemRandom().randint(1000, 60_000_000)
        while slurmd_port == ctld_port:
            slurmd_port = _free_port()
        b = self.base
        conf = f"""# slurm.conf of a throwaway single-host test cluster (slurm/testing/slurm_harness.py)
ClusterName=qstest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={b}/munge/munge.sock
CredType=cred/munge
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool
# job-private temp dirs (PMIx makes /tmp/spmix_appdir_<uid>_<job>.<step> by default:
# every test cluster numbers its jobs from 1, so a dir left by one cluster
# would make the next cluster's step launch fail)
TmpFS={b}/tmp
SlurmctldPidFile={b}/run/slurmctld.pid
SlurmdPidFile={b}/run/slurmd.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
ReturnToService=2
JobRequeue=1
MailProg=/bin/true
# fast teardown: steps get SIGKILL 5 s after SIGTERM
KillWait=5
MinJobAge=600
FirstJobId={first_job}
InactiveLimit=0
NodeName={NODE} NodeHostname=localhost NodeAddr=127.0.0.1 {hw} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""
        with open(self.conf, "w") as f:
            f.write(conf)

    def _spawn(self, name, args):
        log = open(self.path("log", f"{name}.stdout"), "ab")
        env = self.env()
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, start_new_session=True)
        log.close()

    def _wait_for(self, what, pred, timeout):
        t_end = time.time() + timeout
        while time.time() < t_end:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise HarnessUnavailable(f"{name} exited with {p.returncode} while waiting for {what}\n"
                                             + self.log_tail())
            if pred():
                return
            time.sleep(0.3)
        raise HarnessUnavailable(f"timed out after {timeout} s waiting for {what}\n" + self.log_tail())

    def start(self, timeout=60):
        self._check_prereqs()
        if self.base is None:
            self.base = tempfile.mkdtemp(prefix="qs-slurm-")
        os.makedirs(self.base, exist_ok=True)
        self.base = os.path.realpath(self.base)
        for d in ("etc", "state", "spool", "log", "run", "munge", "tmp"):
            os.makedirs(self.path(d), exist_ok=True)
        # munged checks that the dirs on its paths are not writable by others
        os.chmod(self.base, 0o755)
        os.chmod(self.path("munge"), 0o755)
        atexit.register(self.stop)
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            # turn SIGTERM into SystemExit so that finally blocks and atexit tear down
            signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
        self.started = True
        if self.use_watchdog:
            self._start_watchdog()
        try:
            key = self.path("munge", "munge.key")
            subprocess.run(["mungekey", "--create", "--force", "--bits", "1024", "--keyfile", key],
                           check=True, capture_output=True, timeout=30)
            sock = self.path("munge", "munge.sock")
            self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
                                   f"--log-file={self.path('munge', 'munged.log')}",
                                   f"--pid-file={self.path('munge', 'munged.pid')}",
                                   f"--seed-file={self.path('munge', 'munged.seed')}"])
            self._wait_for("munged's socket", lambda: os.path.exists(sock), 20)
            self._write_conf()
            self._spawn("slurmctld", ["slurmctld", "-D", "-f", self.conf])
            self._spawn("slurmd", ["slurmd", "-D", "-f", self.conf, "-N", NODE])
            self._wait_for(f"node {NODE} to be idle", self._node_idle, timeout)
        except HarnessUnavailable:
            self.stop()
            raise
        except (OSError, subprocess.SubprocessError) as e:
            self.stop()
            raise HarnessUnavailable(f"could not start the daemons: {e}\n{self.log_tail()}")
        return self

    def _node_idle(self):
        try:
            p = subprocess.run(["sinfo", "-h", "-n", NODE, "-o", "%T"], capture_output=True, text=True,
                               env=self.env(), timeout=10)
        except subprocess.TimeoutExpired:
            return False
        return p.returncode == 0 and p.stdout.strip() == "idle"

    def _start_watchdog(self):
        # a detached process that tears the cluster down once we are gone, even after SIGKILL
        self._watchdog = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "watch", "--dir", self.base, "--parent", str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    # ---- jobs ----------------------------------------------------------------
    def job_field(self, job_id, field):
        """One field of `scontrol show job` (JobState, Restarts, ExitCode ...), None if gone."""
        p = self.run(["scontrol", "-o", "show", "job", str(job_id)], check=False, timeout=30)
        if p.returncode != 0:
            return None
        for tok in p.stdout.split():
            if tok.startswith(field + "="):
                return tok.split("=", 1)[1]
        return None

    def wait_job(self, job_id, states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"),
                 timeout=300, release_requeued=True, min_restarts=0, settle=3.0):
        """Waits until the job is in one of states and stays there for settle seconds (a job that
        requeues itself passes through FAILED/COMPLETED for a moment), with at least min_restarts
        restarts; returns the state. A requeued job waiting for its BeginTime (Slurm holds it about
        two minutes) is released at once when release_requeued."""
        t_end = time.time() + timeout
        state, seen, since, pending_since = None, None, 0.0, None
        while time.time() < t_end:
            state = self.job_field(job_id, "JobState")
            restarts = int(self.job_field(job_id, "Restarts") or 0)
            now = time.time()
            if state in states:
                if seen != (state, restarts):
                    seen, since = (state, restarts), now
                stable = now - since
                # short of the restarts asked for: give a requeue time to show, then accept the end
                if (restarts >= min_restarts and stable >= settle) or stable >= max(settle, 20):
                    return state
            else:
                seen = None
                # release a requeued job only once the node is idle again: starting it while
                # slurmd still cleans up its previous run can make the launch fail
                if (release_requeued and state == "PENDING" and self.job_field(job_id, "Reason") == "BeginTime"
                        and self._node_idle()):
                    pending_since = pending_since or now
                    if now - pending_since >= 2:
                        self.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=False)
                        pending_since = None
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} still {state} after {timeout} s\n" + self.log_tail())

    # ---- stop ------------------------------------------------------------------
    def stop(self):
        if not self.started:
            return
        self.started = False
        try:
            if os.path.exists(self.conf) and self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
                subprocess.run(["scancel", "--full", "--user", "root"], env=self.env(), capture_output=True, timeout=15)
                t_end = time.time() + 15
                while time.time() < t_end:
                    q = subprocess.run(["squeue", "-h", "-t", "running,completing"], env=self.env(),
                                       capture_output=True, text=True, timeout=15)
                    if q.returncode != 0 or not q.stdout.strip():
                        break
                    time.sleep(0.5)
        except (OSError, subprocess.SubprocessError):
            pass
        teardown(self.base, procs=self.procs)
        if self._watchdog and self._watchdog.poll() is None:
            self._watchdog.terminate()
            try:
                self._watchdog.wait(5)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
        if not self.keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def _read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def teardown(base, procs=None):
    """Stops the daemons of the harness in base by PID, then whatever still carries its marker."""
    pids = []
    for name in ("slurmd", "slurmctld", "munged"):
        p = (procs or {}).get(name)
        if p is not None:
            pids.append(p.pid)
    for f in ("run/slurmd.pid", "run/slurmctld.pid", "munge/munged.pid"):
        pid = _read_pid(os.path.join(base, f))
        if pid and pid not in pids and _marked(pid, base):
            pids.append(pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    t_end = time.time() + 10
    while time.time() < t_end and any(_pid_alive(p) for p in pids):
        for p in (procs or {}).values():
            p.poll()
        time.sleep(0.2)
    # stragglers: slurmstepd and job tasks of this harness, daemons that ignored SIGTERM
    for _ in range(2):
        rest = [p for p in set(pids + _marked_pids(base)) if _pid_alive(p)]
        for pid in rest:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.3)
    for p in (procs or {}).values():
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass


def _marked(pid, base):
    return pid in _marked_pids(base)


def _watch(base, parent):
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # the harness stopped normally
    while _pid_alive(parent):
        time.sleep(1)
    teardown(base)
    shutil.rmtree(base, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description="single-host Slurm cluster for tests")
    ap.add_argument("action", choices=["start", "stop", "watch"])
    ap.add_argument("--dir", required=True, help="the cluster's directory (state, logs, slurm.conf)")
    ap.add_argument("--parent", type=int, help="watch: tear down when this PID is gone")
    a = ap.parse_args()
    if a.action == "watch":
        _watch(a.dir, a.parent)
        return 0
    if a.action == "stop":
        h = SlurmHarness(base=os.path.realpath(a.dir))
        teardown(h.base)
        print(f"stopped the cluster in {h.base}")
        return 0
    h = SlurmHarness(base=a.dir, keep=True, watchdog=False)
    try:
        h.start()
    except HarnessUnavailable as e:
        print(f"cannot start Slurm: {e}", file=sys.stderr)
        return 77
    # leave the daemons running for the shell that called us
    atexit.unregister(h.stop)
    h.started = False
    # (not the marker: `stop` kills what carries it, and that would include this shell)
    print(f"export SLURM_CONF={h.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
