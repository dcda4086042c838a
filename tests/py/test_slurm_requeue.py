"""Preemption through a real Slurm: the batch shell of a running qshard job gets
USR1 (`scancel --signal=USR1 --batch`), forwards it to the ranks, which stop
at a block boundary and exit 3; the job requeues itself, starts again
(restart 1), resumes from the work dir and finishes with exports
byte-identical to an uninterrupted direct `mpirun -np 2 qshard run`.
Skips (77) until `qshard run` can stop and resume (issue 6)."""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("QS_SOURCE_DIR", "."), "tests", "py"))
sys.path.insert(0, os.path.join(os.environ.get("QS_SOURCE_DIR", "."), "slurm", "testing"))
import qstest  # noqa: E402
import qs_slurm_testlib as L  # noqa: E402

LAYERS = 12


def main():
    qs = qstest.qshard()
    if not L.run_implemented(qs):
        L.skip("`qshard run` is not implemented yet")
    L.need_numpy()
    tmp = qstest.tmpdir("qs-slurm-rq-")
    ok, why = L.resume_probe(qs, tmp)
    if not ok:
        L.skip(f"resume is not supported by qshard run yet: {why}")
    model = os.path.join(tmp, "model")
    L.synth_model(qs, model, layers=LAYERS, hidden=256)
    calib = os.path.join(tmp, "calib.npy")
    L.random_tokens(calib, 512, 32, 128, seed=1)
    work = os.path.join(tmp, "work-slurm")
    job = L.job_file(os.path.join(tmp, "job.ini"), model, calib, work, os.path.join(tmp, "out-slurm"),
                     slurm="time = 00:10:00")
    t0 = time.time()
    qstest.mpirun(2, ["run", job, "--work", os.path.join(tmp, "work-direct"), "--out", os.path.join(tmp, "out-direct")])
    print(f"direct mpirun -np 2: {time.time() - t0:.1f} s for {LAYERS} blocks")

    h = L.start_harness()
    try:
        jid = qstest.run(["submit", job], env=h.env(), cwd=tmp).stdout.strip()
        journal = os.path.join(work, "journal.log")

        def blocks_done():
            return len(L.journal_blocks_done(journal))
        L.wait_for(lambda: blocks_done() >= 2, 120, "two blocks journaled done in the first attempt")
        before = blocks_done()
        h.run(["scancel", "--signal=USR1", "--batch", jid])
        print(f"sent USR1 to the batch shell of job {jid} after {before} block(s)")
        slog = os.path.join(work, "slurm.log")
        L.wait_for(lambda: os.path.exists(slog) and "interrupted (exit 3)" in L.read(slog), 120,
                   "the interrupted run to exit 3")
        # between the attempts: qshard status reads the journal the interrupted run left
        st = json.loads(qstest.run(["status", work, "--json"]).stdout)
        print(f"status between attempts: {st['blocks_done']}/{st['blocks_total']} blocks, job {st['slurm_job_id']}")
        assert st["journal"] and before <= st["blocks_done"] < LAYERS and st["blocks_total"] == LAYERS, st
        assert st["slurm_job_id"] == jid and not st["finished"], st
        # the job requeues itself; wait_job releases it from its BeginTime hold
        state = h.wait_job(jid, timeout=300, min_restarts=1)
        if state != "COMPLETED":
            for f in (f"slurm-{jid}.out", f"slurm-{jid}.err", "slurm.log"):
                p = os.path.join(work, f)
                print(f"--- {f}\n" + (L.read(p) if os.path.exists(p) else "(none)"))
            print(h.run(["scontrol", "show", "job", jid], check=False).stdout)
            print(h.log_tail(60))
            raise AssertionError(f"job {jid} ended {state}")
        log = L.read(os.path.join(work, "slurm.log"))
        print(log)
        assert h.job_field(jid, "Restarts") == "1", f"Restarts={h.job_field(jid, 'Restarts')}"
        assert "got SIGUSR1: forwarding it to the ranks" in log, log
        assert f"job={jid} restart=0 chain=1/1 interrupted (exit 3): requeued" in log, log
        assert f"job={jid} restart=1 chain=1/1 start" in log, log
        assert f"job={jid} restart=1 chain=1/1 finished (exit 0)" in log, log
        files = L.assert_same_exports(os.path.join(tmp, "out-direct"), os.path.join(tmp, "out-slurm"))
        print(f"byte-identical after the requeue: {', '.join(files)}")
        st = json.loads(qstest.run(["status", work, "--json"]).stdout)
        assert st["finished"] and st["slurm_job_id"] == jid and st["slurm_restarts"] == 1, st
        # resumed, not restarted: every block was journaled done exactly once over both attempts
        text = L.read(journal)
        assert sorted(L.journal_blocks_done(journal)) == list(range(LAYERS)), text
        assert "run resumed" in text, text
        print(f"journal: {before} block(s) done before the signal, each of the {LAYERS} blocks done once over both attempts")
    finally:
        h.stop()
    print("ok")


if __name__ == "__main__":
    main()
