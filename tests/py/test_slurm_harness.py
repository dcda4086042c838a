"""The single-host Slurm harness: daemons start, sinfo and srun work, a batch
job runs, and teardown leaves no daemon or job process behind."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("QS_SOURCE_DIR", "."), "slurm", "testing"))
import qs_slurm_testlib as L  # noqa: E402
from slurm_harness import MARKER, _marked_pids, _pid_alive  # noqa: E402


def main():
    t0 = time.time()
    h = L.start_harness()
    base = h.base
    daemon_pids = [p.pid for p in h.procs.values()]
    try:
        print(f"harness up in {time.time() - t0:.1f} s in {base}")
        out = h.run(["sinfo", "-h", "-o", "%P %a %D %T %c"]).stdout.split()
        L_cpus = os.cpu_count()
        assert out == ["debug*", "up", "1", "idle", str(h.cpus)], out
        assert h.cpus == L_cpus, f"node has {h.cpus} CPUs, this machine {L_cpus}"
        # a 2-task step: srun starts both tasks and each knows its rank
        p = h.run(["srun", "-n", "2", "bash", "-c", "echo rank=$SLURM_PROCID host=$(hostname)"], timeout=60)
        lines = sorted(p.stdout.split("\n")[:-1])
        assert [l.split()[0] for l in lines] == ["rank=0", "rank=1"], p.stdout
        assert all(l.split()[1] == "host=" + os.uname().nodename for l in lines), p.stdout
        # a batch job with output in a file, waited for through scontrol
        outf = os.path.join(base, "job.out")
        jid = h.run(["sbatch", "--parsable", "-n", "1", "-o", outf, "--wrap", "echo hello from $SLURM_JOB_ID"]).stdout.strip()
        assert h.wait_job(jid, timeout=60) == "COMPLETED"
        assert L.read(outf).strip() == f"hello from {jid}", L.read(outf)
        # a long job left running: teardown must end it
        h.run(["sbatch", "--parsable", "-n", "2", "--wrap", "srun sleep 300"])
        L.wait_for(lambda: h.run(["squeue", "-h", "-t", "running"]).stdout.strip(), 30, "the sleep job to run")
        L.wait_for(lambda: len(_marked_pids(base)) > len(daemon_pids), 30, "the job's processes")
    finally:
        h.stop()
    assert not any(_pid_alive(p) for p in daemon_pids), "a daemon survived stop()"
    left = _marked_pids(base)
    assert not left, f"processes with {MARKER}={base} survived: {left}"
    assert not os.path.exists(base), "the harness directory was not removed"
    print(f"ok: harness test in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
