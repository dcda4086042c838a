"""`qshard submit` and `qshard status` without a Slurm cluster.

- --dry-run prints a script whose #SBATCH lines follow the job file's [slurm]
  section and the flags that override it; it writes nothing; bash accepts it.
- sbatch missing or failing: one line on stderr, exit 2, sbatch's message in it.
- With a fake sbatch: --chain 3 submits three jobs with --dependency=singleton,
  prints their ids, writes the script and the ids into the work dir.
- The batch script itself, run by bash with fake srun/scontrol/scancel/mpirun:
  exit 0 marks the run done and never requeues; exit 3 requeues (or leaves it
  to the next job of a chain); other codes fail without requeue; USR1 sent to
  the batch shell reaches the job step; the launcher falls back to mpirun
  without PMIx; OMP_NUM_THREADS follows --cpus-per-task.
- `qshard status` reads what those runs left.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("QS_SOURCE_DIR", "."), "tests", "py"))
import qstest  # noqa: E402

QS = qstest.qshard()
FAILS = []


def check(cond, msg):
    if not cond:
        FAILS.append(msg)
        print("FAIL:", msg)


def sbatch_lines(script):
    opts = {}
    flags = set()
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            opt = line[len("#SBATCH "):].strip()
            if "=" in opt:
                k, v = opt.split("=", 1)
                opts[k] = v
            else:
                flags.add(opt)
    return opts, flags


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def test_dry_run(tmp):
    job = os.path.join(tmp, "job.ini")
    write(job, """[model]
model = model
[calibration]
calib = calib.npy
[run]
work = runs/w1
[output]
out = runs/out
[slurm]
nodes = 2
gpus-per-node = 4
cpus-per-task = 8
time = 12:00:00
partition = gpu
account = proj
signal-grace = 300
""")
    p = qstest.run(["submit", job, "--dry-run", "--time", "01:00:00", "--account", "other", "--bits", "3"],
                   cwd=tmp)
    opts, flags = sbatch_lines(p.stdout)
    work = os.path.join(tmp, "runs", "w1")
    want = {"--nodes": "2", "--ntasks-per-node": "4", "--gpus-per-node": "4", "--cpus-per-task": "8",
            "--time": "01:00:00", "--partition": "gpu", "--account": "other", "--signal": "B:USR1@300",
            "--open-mode": "append", "--output": f"{work}/slurm-%j.out", "--error": f"{work}/slurm-%j.err"}
    for k, v in want.items():
        check(opts.get(k) == v, f"dry-run: #SBATCH {k}={opts.get(k)}, expected {v}")
    check("--requeue" in flags, "dry-run: no #SBATCH --requeue")
    check(re.fullmatch(r"qshard-w1-[0-9a-f]{8}", opts.get("--job-name", "")) is not None,
          f"dry-run: job name {opts.get('--job-name')}")
    check(p.stdout.startswith("#!/bin/bash\n"), "dry-run: no #!/bin/bash first")
    check("{{" not in p.stdout, "dry-run: a placeholder was left")
    # the run gets the job file (absolute) and the non-Slurm flags, not the Slurm ones
    m = re.search(r"^RUN_ARGS=\((.*)\)", p.stdout, re.M)
    check(m and m.group(1) == f"'{job}' '--bits' '3'", f"dry-run: RUN_ARGS {m and m.group(1)}")
    check(not os.path.exists(os.path.join(tmp, "runs")), "dry-run created the work dir")
    script = os.path.join(tmp, "dry.sbatch")
    write(script, p.stdout)
    r = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
    check(r.returncode == 0, f"bash -n rejects the script: {r.stderr}")
    # CPU-only: tasks-per-node ranks, no GPU line
    p = qstest.run(["submit", job, "--dry-run", "--gpus-per-node", "0", "--tasks-per-node", "3"], cwd=tmp)
    opts, _ = sbatch_lines(p.stdout)
    check(opts.get("--ntasks-per-node") == "3" and "--gpus-per-node" not in opts,
          f"CPU-only dry-run: {opts}")

    # bad input: one line, exit 2
    for args, needle in [(["--time", "1 hour"], "--time"), (["--nodes", "0"], "--nodes"),
                         (["--work", "/tmp/a b"], "/tmp/a b"), (["--no-such-flag", "1"], "no-such-flag")]:
        p = qstest.run(["submit", job, "--dry-run"] + args, expect=2, cwd=tmp)
        check(p.stderr.count("\n") == 1 and needle in p.stderr and p.stderr.startswith("qshard submit: error:"),
              f"bad {args}: stderr {p.stderr!r}")
    p = qstest.run(["submit", os.path.join(tmp, "missing.ini"), "--dry-run"], expect=2)
    check("missing.ini" in p.stderr, f"missing job file: {p.stderr!r}")
    return job


def test_sbatch_errors(tmp, job):
    env = dict(os.environ)
    env.pop("QS_SBATCH", None)
    env["PATH"] = "/nonexistent-bin"
    p = qstest.run(["submit", job, "--work", os.path.join(tmp, "e1")], expect=2, env=env, cwd=tmp)
    check(p.stderr.count("\n") == 1 and "sbatch" in p.stderr and "not found" in p.stderr,
          f"sbatch missing: {p.stderr!r}")
    fake = os.path.join(tmp, "sbatch_fail")
    write(fake, "#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid account or "
                "account/partition combination specified' >&2\nexit 1\n", 0o755)
    env = dict(os.environ, QS_SBATCH=fake)
    p = qstest.run(["submit", job, "--work", os.path.join(tmp, "e2")], expect=2, env=env, cwd=tmp)
    check(p.stderr.count("\n") == 1 and "Invalid account or account/partition combination" in p.stderr,
          f"sbatch failing: {p.stderr!r}")


def test_chain_submit(tmp, job):
    calls = os.path.join(tmp, "sbatch_calls")
    fake = os.path.join(tmp, "sbatch_ok")
    write(fake, f"""#!/bin/bash
n=$(( $(cat '{calls}' 2>/dev/null | wc -l) + 1 ))
echo "$*" >> '{calls}'
echo "$((500 + n));qstest"
""", 0o755)
    work = os.path.join(tmp, "chainwork")
    os.makedirs(work)
    write(os.path.join(work, "slurm_done"), "1\n")   # a finished earlier run
    env = dict(os.environ, QS_SBATCH=fake)
    p = qstest.run(["submit", job, "--work", work, "--chain", "3", "--time", "00:30:00"], env=env, cwd=tmp)
    check(p.stdout.split() == ["501", "502", "503"], f"chain: printed {p.stdout!r}")
    script = os.path.join(work, "qshard.sbatch")
    lines = open(calls).read().splitlines()
    check(lines == [f"--parsable --dependency=singleton {script} {i} 3" for i in (1, 2, 3)], f"sbatch calls: {lines}")
    check(open(os.path.join(work, "slurm_submitted")).read().split() == ["501", "502", "503"], "slurm_submitted")
    check(not os.path.exists(os.path.join(work, "slurm_done")), "submit kept a stale slurm_done")
    dry = qstest.run(["submit", job, "--work", work, "--chain", "3", "--time", "00:30:00", "--dry-run"], cwd=tmp)
    check(open(script).read() == dry.stdout, "the script in the work dir differs from --dry-run's")
    st = json.loads(qstest.run(["status", work, "--json"]).stdout)
    check(st["slurm_submitted"] == ["501", "502", "503"] and st["slurm_job_id"] is None
          and st["journal"] is False, f"status after submit: {st}")


FAKE_SRUN = r"""#!/bin/bash
if [ "$1" = "--mpi=list" ]; then
    printf 'MPI plugin types are...\n\t%s\n\tnone\n' "${FAKE_MPI:-pmix}"; exit 0
fi
printf '%s\n' "$@" > "$FAKE_DIR/launch_args"
echo "OMP_NUM_THREADS=$OMP_NUM_THREADS" > "$FAKE_DIR/launch_env"
case "$FAKE_MODE" in
    exit0) echo "2026-01-01T00:00:00Z run finished: fake" >> "$FAKE_WORK/journal.log"; exit 0 ;;
    launch_failed) echo "srun: error: task 0 launch failed: Unspecified error" >&2; exit 0 ;;
    started_exit1) echo "2026-01-01T00:00:00Z run started: fake" >> "$FAKE_WORK/journal.log"; exit 1 ;;
    exit*) exit "${FAKE_MODE#exit}" ;;
    wait_usr1)
        trap 'echo got-usr1 >> "$FAKE_DIR/events"; exit 3' USR1
        touch "$FAKE_DIR/ready"
        for i in $(seq 600); do sleep 0.05; done
        exit 9 ;;
esac
"""


def run_batch(tmp, script, mode, chain=(1, 1), extra_env=None, background=False, work=None):
    fake = os.path.join(tmp, "fakebin")
    for f in ("launch_args", "launch_env", "events", "ready", "scontrol_calls", "scancel_calls"):
        if os.path.exists(os.path.join(tmp, f)):
            os.remove(os.path.join(tmp, f))
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", FAKE_DIR=tmp, FAKE_MODE=mode,
               FAKE_WORK=work or os.path.join(tmp, "bwork"),
               SLURM_JOB_ID="77", SLURM_RESTART_COUNT="2", SLURM_CPUS_PER_TASK="3",
               SLURM_JOB_NAME="qshard-test", SLURM_NTASKS="2")
    env.update(extra_env or {})
    cmd = ["bash", script, str(chain[0]), str(chain[1])]
    if background:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def exists(tmp, name):
    return os.path.exists(os.path.join(tmp, name))


def readf(path):
    return open(path).read() if os.path.exists(path) else ""


def test_batch_script(tmp, job):
    fake = os.path.join(tmp, "fakebin")
    os.makedirs(fake)
    write(os.path.join(fake, "srun"), FAKE_SRUN, 0o755)
    write(os.path.join(fake, "mpirun"), FAKE_SRUN, 0o755)
    write(os.path.join(fake, "scontrol"), '#!/bin/sh\necho "$*" >> "$FAKE_DIR/scontrol_calls"\n', 0o755)
    write(os.path.join(fake, "scancel"), '#!/bin/sh\necho "$*" >> "$FAKE_DIR/scancel_calls"\n', 0o755)
    work = os.path.join(tmp, "bwork")
    p = qstest.run(["submit", job, "--work", work, "--dry-run"], cwd=tmp)
    os.makedirs(work)
    script = os.path.join(tmp, "b.sbatch")
    write(script, p.stdout)
    log = os.path.join(work, "slurm.log")

    # exit 0: done, never requeued, id and restart count logged
    r = run_batch(tmp, script, "exit0")
    args = readf(os.path.join(tmp, "launch_args")).splitlines()
    check(r.returncode == 0, f"exit0: batch rc {r.returncode}: {r.stdout}{r.stderr}")
    # --cpus-per-task again on srun (a step does not inherit it since Slurm 22.05)
    check(args[:3] == ["--mpi=pmix", "--kill-on-bad-exit=0", "--cpus-per-task=3"] and args[3] == QS
          and args[4:6] == ["run", job], f"exit0: launch args {args}")
    check(readf(os.path.join(tmp, "launch_env")).strip() == "OMP_NUM_THREADS=3", "OMP_NUM_THREADS != cpus-per-task")
    check(exists(work, "slurm_done") and not exists(tmp, "scontrol_calls"), "exit0: requeued or not marked done")
    check(readf(os.path.join(work, "slurm_job_id")).strip() == "77", "exit0: slurm_job_id")
    check("job=77 restart=2 chain=1/1 start" in readf(log) and "finished (exit 0)" in readf(log),
          f"exit0: slurm.log {readf(log)!r}")
    st = json.loads(qstest.run(["status", work, "--json"]).stdout)
    check(st["slurm_job_id"] == "77" and st["finished"] is True and st["slurm_restarts"] == 2, f"status: {st}")

    # a later job of a chain after the run finished: nothing to do
    r = run_batch(tmp, script, "exit1", chain=(2, 3))
    check(r.returncode == 0 and not exists(tmp, "launch_args") and "already finished" in readf(log),
          f"chain after done: rc {r.returncode}, launched {exists(tmp, 'launch_args')}")
    os.remove(os.path.join(work, "slurm_done"))

    # exit 3 alone: requeue this job
    r = run_batch(tmp, script, "exit3")
    check(r.returncode == 3 and readf(os.path.join(tmp, "scontrol_calls")).strip() == "requeue 77",
          f"exit3: rc {r.returncode}, scontrol {readf(os.path.join(tmp, 'scontrol_calls'))!r}")
    check("requeued" in readf(log) and not exists(work, "slurm_done"), "exit3: log/done")

    # exit 3 inside a chain (not the last job): the next job continues, no requeue
    r = run_batch(tmp, script, "exit3", chain=(1, 3))
    check(r.returncode == 3 and not exists(tmp, "scontrol_calls") and "job 2 of the chain resumes" in readf(log),
          f"chain exit3: rc {r.returncode}, scontrol {readf(os.path.join(tmp, 'scontrol_calls'))!r}")
    # ... but the last job of a chain requeues
    r = run_batch(tmp, script, "exit3", chain=(3, 3))
    check(readf(os.path.join(tmp, "scontrol_calls")).strip() == "requeue 77", "last chain job did not requeue")

    # a launcher that exits 0 without running the run (srun's failed task launch):
    # a failure, never "finished" (hardening, issue 15)
    r = run_batch(tmp, script, "launch_failed")
    last = readf(log).splitlines()[-1]
    check(r.returncode == 1 and not exists(work, "slurm_done") and not exists(tmp, "scontrol_calls")
          and "failed (exit 1): the launcher exited 0 but" in last and "records no finished run" in last,
          f"launch failed with exit 0: rc {r.returncode}, one failure line expected, log {readf(log)!r}")
    st = json.loads(qstest.run(["status", work, "--json"]).stdout)
    check(st["slurm_failed"] is True and st["finished"] is False and st["slurm_last_event"].endswith(last.split(" ", 1)[1]),
          f"status after a failed launch: {st}")
    txt = qstest.run(["status", work]).stdout
    check("finished: no: the last Slurm job failed" in txt and "records no finished run" in txt,
          f"status text after a failed launch:\n{txt}")

    # any other failure: no requeue, its code comes back; the run never
    # started (no "run started" line added to the journal): the line says so
    r = run_batch(tmp, script, "exit1")
    last = readf(log).splitlines()[-1]
    check(r.returncode == 1 and not exists(tmp, "scontrol_calls") and "failed (exit 1) before the run started" in last,
          f"exit1: rc {r.returncode}, last line {last!r}")
    r = run_batch(tmp, script, "started_exit1")
    last = readf(log).splitlines()[-1]
    check(r.returncode == 1 and "failed (exit 1); not requeued" in last, f"started, then exit 1: {last!r}")

    # finished inside a chain: the pending rest of the chain is cancelled
    r = run_batch(tmp, script, "exit0", chain=(1, 3))
    check("--state=PENDING --name=qshard-test" in readf(os.path.join(tmp, "scancel_calls")),
          f"chain done: scancel {readf(os.path.join(tmp, 'scancel_calls'))!r}")
    os.remove(os.path.join(work, "slurm_done"))

    # USR1 to the batch shell reaches the step, which exits 3: requeued
    proc = run_batch(tmp, script, "wait_usr1", background=True)
    t_end = time.time() + 20
    while not exists(tmp, "ready") and time.time() < t_end:
        time.sleep(0.05)
    check(exists(tmp, "ready"), "usr1: the fake step never started")
    proc.send_signal(signal.SIGUSR1)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        check(False, "usr1: the batch script did not end after USR1")
    check(proc.returncode == 3, f"usr1: batch rc {proc.returncode}: {out}")
    check(readf(os.path.join(tmp, "events")).strip() == "got-usr1", "usr1: the step did not get USR1")
    check(readf(os.path.join(tmp, "scontrol_calls")).strip() == "requeue 77", "usr1: not requeued")
    check("got SIGUSR1: forwarding it to the ranks" in readf(log), "usr1: not logged")

    # TERM to the batch shell (preemption, scancel --signal=TERM --batch) reaches the
    # step as USR1, which srun and mpirun relay to the ranks (mpirun kills them on TERM)
    for launcher in ("srun-pmix", "mpirun"):
        for f in ("events", "ready", "scontrol_calls"):
            if exists(tmp, f):
                os.remove(os.path.join(tmp, f))
        proc = run_batch(tmp, script, "wait_usr1", background=True, extra_env={"QS_LAUNCHER": launcher})
        t_end = time.time() + 20
        while not exists(tmp, "ready") and time.time() < t_end:
            time.sleep(0.05)
        check(exists(tmp, "ready"), f"term ({launcher}): the fake step never started")
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        check(proc.returncode == 3 and readf(os.path.join(tmp, "events")).strip() == "got-usr1",
              f"term ({launcher}): rc {proc.returncode}, step events {readf(os.path.join(tmp, 'events'))!r}: {out}")
        check("got SIGTERM: forwarding it to the ranks as USR1" in readf(log), f"term ({launcher}): not logged")

    # no PMIx in this Slurm: mpirun inside the allocation
    r = run_batch(tmp, script, "exit0", extra_env={"FAKE_MPI": "pmi2"})
    args = readf(os.path.join(tmp, "launch_args")).splitlines()
    check(args[:2] == ["--bind-to", "none"] and args[2] == QS, f"mpirun fallback: {args}")
    check("launch: mpirun" in readf(log), "mpirun fallback not logged")


def main():
    tmp = qstest.tmpdir("qs-slurm-cli-")
    job = test_dry_run(tmp)
    test_sbatch_errors(tmp, job)
    test_chain_submit(tmp, job)
    test_batch_script(tmp, job)
    if FAILS:
        print(f"{len(FAILS)} check(s) failed")
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
