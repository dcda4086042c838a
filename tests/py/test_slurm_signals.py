"""SIGTERM through a real Slurm, with both launchers (issue 15, item 8).

For QS_LAUNCHER=mpirun and QS_LAUNCHER=srun-pmix: a qshard job's batch shell
gets TERM (`scancel --signal=TERM --batch`, what preemption and a plain
scancel of the batch step send) once a block is journaled; it forwards it to
the launcher as USR1, which mpirun and srun relay to the ranks; they stop at
a block boundary and exit 3; the job requeues itself, restarts, resumes and
finishes with exports byte-identical to a direct `mpirun -np 2` run. Before,
the batch shell forwarded TERM itself: mpirun answers TERM by killing the
ranks and exits 1 — no "interrupted" line, no requeue.

First, on the same cluster, a launch that fails: the batch script (what
`qshard submit --dry-run` prints) names a qshard binary that is gone by the
time the job runs, so srun cannot start a single rank. The job must end
FAILED, not requeued, with no slurm_done and one slurm.log line saying that
it failed before the run started — never "finished (exit 0)" — and
`qshard status` must report it as failed.
"""
import json
import os
import shutil
import subprocess
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
        # ---- a launch that fails: the binary is gone when srun starts the ranks ----
        gone = os.path.join(tmp, "gone")
        os.makedirs(gone)
        shutil.copy2(qs, os.path.join(gone, "qshard"))
        work, out = os.path.join(tmp, "work-gone"), os.path.join(tmp, "out-gone")
        job = L.job_file(os.path.join(tmp, "job-gone.ini"), model, calib, work, out, slurm="time = 00:05:00")
        cmd = [os.path.join(gone, "qshard"), "submit", job, "--dry-run", "--template",
               qstest.source("slurm", "qshard.sbatch")]
        script_text = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tmp,
                                     env=h.env({"QS_LAUNCHER": "srun-pmix"})).stdout
        os.makedirs(work)
        script = os.path.join(work, "qshard.sbatch")
        with open(script, "w") as f:
            f.write(script_text)
        os.remove(os.path.join(gone, "qshard"))
        p = subprocess.run(["sbatch", "--parsable", script, "1", "1"], capture_output=True, text=True, cwd=tmp,
                           env=h.env({"QS_LAUNCHER": "srun-pmix"}), timeout=60)
        qstest.check(p.returncode == 0, f"sbatch: {p.stderr}")
        jid = p.stdout.strip().split(";")[0]
        state = h.wait_job(jid, timeout=120)
        slog = L.read(os.path.join(work, "slurm.log"))
        last = slog.splitlines()[-1]
        qstest.check(state == "FAILED" and "finished (exit 0)" not in slog and "interrupted" not in slog
                     and int(h.job_field(jid, "Restarts") or 0) == 0
                     and not os.path.exists(os.path.join(work, "slurm_done")),
                     f"a failed launch: job {state}, slurm.log:\n{slog}")
        qstest.check(" failed (exit " in last and "before the run started" in last, f"the failure line: {last!r}")
        st = json.loads(qstest.run(["status", work, "--json"]).stdout)
        qstest.check(st["slurm_failed"] is True and st["finished"] is False, f"status after a failed launch: {st}")
        print(f"a failed launch (binary gone): job {jid} {state}, one line: {last.split(' ', 4)[-1]}")

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
