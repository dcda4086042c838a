"""`qshard submit --chain 3` with a time limit shorter than the run: Slurm
sends USR1 `signal-grace` seconds before each job's 1-minute limit, the run
stops at a block boundary (exit 3), the next job of the chain (linked by
--dependency=singleton) resumes it, and the run finishes across several jobs
with exports byte-identical to an uninterrupted `mpirun -np 2 qshard run`.
Skips (77) until `qshard run` can stop and resume (issue 6).

Timing: slurmctld checks time limits every 30 s and sends the warning signal
once the time left is under grace + 30 s, so with time=1:00 USR1 arrives at
the first check, 0-30 s into each job. The run is sized from a short timed
run on this machine to take about TARGET_S seconds, so that the first job
cannot finish it. A last job of the chain that is interrupted requeues
itself: a slow machine needs more time, not more jobs."""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("QS_SOURCE_DIR", "."), "tests", "py"))
sys.path.insert(0, os.path.join(os.environ.get("QS_SOURCE_DIR", "."), "slurm", "testing"))
import qstest  # noqa: E402
import qs_slurm_testlib as L  # noqa: E402

HIDDEN = 384
TARGET_S = 45.0


def main():
    qs = qstest.qshard()
    if not L.run_implemented(qs):
        L.skip("`qshard run` is not implemented yet")
    L.need_numpy()
    tmp = qstest.tmpdir("qs-slurm-chain-")
    ok, why = L.resume_probe(qs, tmp)
    if not ok:
        L.skip(f"resume is not supported by qshard run yet: {why}")
    # seconds per block on this machine, from a 4-block run of the same width
    calib = os.path.join(tmp, "calib.npy")
    # Few calibration tokens (32 x 64): a resumed job first re-runs the forward of
    # every finished block (docs/scheduling.md, "Resume"), and a job can only gain
    # ground when that costs clearly less than the blocks' quantization, as in a
    # real model (BLOOM-176B: forward ~7% of a block). With 512 x 64 tokens on
    # this 384-wide model the forward was 80% of a block, and a resumed job
    # spent its whole 27 s re-running the forward (11 requeues, no progress).
    L.random_tokens(calib, 32, 64, 128, seed=2)
    small = os.path.join(tmp, "model-4")
    L.synth_model(qs, small, layers=4, hidden=HIDDEN)
    t0 = time.time()
    qstest.mpirun(2, ["run", "--model", small, "--calib", calib, "--work", os.path.join(tmp, "work-4"),
                      "--out", os.path.join(tmp, "out-4"), "--group-size", "32"])
    per_block = (time.time() - t0) / 4
    layers = max(8, min(60, int(TARGET_S / per_block + 0.999)))
    print(f"{per_block:.2f} s per block here: {layers} blocks for a ~{TARGET_S:.0f} s run")
    model = os.path.join(tmp, "model")
    L.synth_model(qs, model, layers=layers, hidden=HIDDEN)
    work = os.path.join(tmp, "work-slurm")
    job = L.job_file(os.path.join(tmp, "job.ini"), model, calib, work, os.path.join(tmp, "out-slurm"),
                     slurm="time = 00:01:00\nsignal-grace = 40\nchain = 3")

    h = L.start_harness()
    try:
        t0 = time.time()
        ids = qstest.run(["submit", job], env=h.env(), cwd=tmp).stdout.split()
        assert len(ids) == 3 and all(i.isdigit() for i in ids), ids
        deps = [h.job_field(i, "Dependency") for i in ids]
        assert all(d and "singleton" in d for d in deps[1:]), deps
        names = {h.job_field(i, "JobName") for i in ids}
        assert len(names) == 1, names
        states = [h.wait_job(i, timeout=420) for i in ids]
        chain_s = time.time() - t0
        log = L.read(os.path.join(work, "slurm.log"))
        print(log)
        print(f"chain states {dict(zip(ids, states))} in {chain_s:.0f} s")
        assert os.path.exists(os.path.join(work, "slurm_done")), "the chain ended without finishing the run"
        launched = sorted({m for m in re.findall(r"job=(\d+) restart=\d+ chain=\d/3 launch:", log)}, key=int)
        assert len(launched) >= 2, f"the run ran in {len(launched)} job(s) only ({launched}): not across several"
        assert "interrupted (exit 3): job 2 of the chain resumes" in log, log
        assert log.count("finished (exit 0)") == 1, log
        journal = L.read(os.path.join(work, "journal.log"))
        assert sorted(L.journal_blocks_done(os.path.join(work, "journal.log"))) == list(range(layers)), journal
        assert journal.count("run resumed") == len(launched) - 1 + log.count("requeued;"), journal
        st = json.loads(qstest.run(["status", work, "--json"]).stdout)
        assert st["finished"] and st["blocks_done"] == st["blocks_total"] == layers, st
        assert st["slurm_submitted"] == ids, st
    finally:
        h.stop()
    t0 = time.time()
    qstest.mpirun(2, ["run", job, "--work", os.path.join(tmp, "work-direct"), "--out", os.path.join(tmp, "out-direct")])
    print(f"direct mpirun -np 2: {time.time() - t0:.1f} s for {layers} blocks; the chain took {chain_s:.0f} s "
          f"in {len(launched)} jobs")
    files = L.assert_same_exports(os.path.join(tmp, "out-direct"), os.path.join(tmp, "out-slurm"))
    print(f"byte-identical after {len(launched)} jobs: {', '.join(files)}")
    print("ok")


if __name__ == "__main__":
    main()
