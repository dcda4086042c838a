"""SIGTERM through a real Slurm, with both launchers (issue 15, item 8).

For QS_LAUNCHER=mpirun and QS_LAUNCHER=srun-pmix: a qshard job's batch shell
gets TERM (`scancel --signal=TERM --batch`, what preemption and a plain
scancel of the batch step send) once a block is journaled; it forwards it to
the launcher as USR1, which mpirun and srun relay to the ranks; they stop at
a block boundary and exit 3; the job requeues itself, restarts, resumes and
finishes with exports byte-identical to a direct `mpirun -np 2` run. Before,
the batch shell forwarded TERM itself: mpirun answers TERM by killing the
ranks and exits 1 — no "interrupted" line, no requeue.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("QS_SOURCE_DIR", "."), "tests", "py"))
sys.path.insert(0, os.path.join(os.environ.get("QS_SOURCE_DIR", "."), "slurm", "testing"))
import qstest  # noqa: E402
import qs_slurm_testlib as L  # noqa: E402

LAYERS = 10


def main():
    qs = qstest.qshard()
    L.need_numpy()
    tmp = qstest.tmpdir("qs-slurm-sig-")
    model = os.path.join(tmp, "model")
    L.synth_model(qs, model, layers=LAYERS, hidden=256)
    calib = os.path.join(tmp, "calib.npy")
    L.random_tokens(calib, 512, 32, 128, seed=2)
    direct = os.path.join(tmp, "out-direct")
    job0 = L.job_file(os.path.join(tmp, "job0.ini"), model, calib, os.path.join(tmp, "work-direct"), direct)
    qstest.mpirun(2, ["run", job0])

    h = L.start_harness()
    try:
        for launcher in ("mpirun", "srun-pmix"):
            work, out = os.path.join(tmp, f"work-{launcher}"), os.path.join(tmp, f"out-{launcher}")
            job = L.job_file(os.path.join(tmp, f"job-{launcher}.ini"), model, calib, work, out,
                             slurm="time = 00:10:00")
            jid = qstest.run(["submit", job], env=h.env({"QS_LAUNCHER": launcher}), cwd=tmp).stdout.strip()
            journal, slog = os.path.join(work, "journal.log"), os.path.join(work, "slurm.log")
            L.wait_for(lambda: len(L.journal_blocks_done(journal)) >= 1, 180, f"{launcher}: a block journaled done")
            t0 = time.time()
            h.run(["scancel", "--signal=TERM", "--batch", jid])
            L.wait_for(lambda: os.path.exists(slog) and ("interrupted (exit 3)" in L.read(slog)
                                                         or "failed (exit" in L.read(slog)), 180,
                       f"{launcher}: the job's first attempt to end")
            log = L.read(slog)
            if "interrupted (exit 3)" not in log:
                for f in (f"slurm-{jid}.out", f"slurm-{jid}.err"):
                    p = os.path.join(work, f)
                    print(f"--- {f}\n" + (L.read(p) if os.path.exists(p) else "(none)"))
                raise AssertionError(f"{launcher}: TERM did not end the run with exit 3:\n{log}")
            print(f"{launcher}: TERM → exit 3 after {time.time() - t0:.1f} s")
            state = h.wait_job(jid, timeout=300, min_restarts=1)
            log = L.read(slog)
            if state != "COMPLETED":
                print(log)
                print(h.log_tail(40))
                raise AssertionError(f"{launcher}: job {jid} ended {state}")
            for want in ("got SIGTERM: forwarding it to the ranks as USR1", f"launch: {launcher}",
                         f"job={jid} restart=0 chain=1/1 interrupted (exit 3): requeued",
                         f"job={jid} restart=1 chain=1/1 finished (exit 0)"):
                qstest.check(want in log, f"{launcher}: '{want}' not in slurm.log:\n{log}")
            text = L.read(journal)
            qstest.check("run interrupted at a block boundary" in text and "run resumed" in text,
                         f"{launcher}: the journal does not show the stop and the resume:\n{text}")
            qstest.check(sorted(L.journal_blocks_done(journal)) == list(range(LAYERS)),
                         f"{launcher}: blocks journaled: {L.journal_blocks_done(journal)}")
            files = L.assert_same_exports(direct, out)
            print(f"{launcher}: requeued, resumed, byte-identical to mpirun -np 2 ({len(files)} files)")
    finally:
        h.stop()
    print("ok")


if __name__ == "__main__":
    main()
