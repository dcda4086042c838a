"""TinyStories-656K through a real Slurm: `qshard submit` with 2 tasks on the
single-host test cluster completes, and its exports (*.safetensors, *.json)
are byte-identical to those of a direct `mpirun -np 2 qshard run`."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("QS_SOURCE_DIR", "."), "tests", "py"))
sys.path.insert(0, os.path.join(os.environ.get("QS_SOURCE_DIR", "."), "slurm", "testing"))
import qstest  # noqa: E402
import qs_slurm_testlib as L  # noqa: E402


def main():
    qs = qstest.qshard()
    if not L.run_implemented(qs):
        L.skip("`qshard run` is not implemented yet")
    model = qstest.shared("models", "tinystories-656K")
    text = qstest.shared("text", "tinystories_valid_head.txt")
    tmp = qstest.tmpdir("qs-slurm-ts-")
    calib = os.path.join(tmp, "calib.npy")
    shape = L.tinystories_tokens(os.path.join(model, "tokenizer.json"), text, calib, rows=64, seq=128)
    print(f"calibration tokens {shape}")
    job = L.job_file(os.path.join(tmp, "job.ini"), model, calib, os.path.join(tmp, "work-slurm"),
                     os.path.join(tmp, "out-slurm"), slurm="time = 00:10:00")

    t0 = time.time()
    qstest.mpirun(2, ["run", job, "--work", os.path.join(tmp, "work-direct"), "--out", os.path.join(tmp, "out-direct")])
    print(f"direct mpirun -np 2: {time.time() - t0:.1f} s")

    h = L.start_harness()
    try:
        t0 = time.time()
        p = qstest.run(["submit", job], env=h.env(), cwd=tmp)
        ids = p.stdout.split()
        assert len(ids) == 1 and ids[0].isdigit(), p.stdout
        jid = ids[0]
        state = h.wait_job(jid, timeout=300)
        work = os.path.join(tmp, "work-slurm")
        if state != "COMPLETED":
            for f in (f"slurm-{jid}.out", f"slurm-{jid}.err", "slurm.log"):
                print(f"--- {f}\n" + (L.read(os.path.join(work, f)) if os.path.exists(os.path.join(work, f)) else "(none)"))
            print(h.run(["scontrol", "show", "job", jid], check=False).stdout)
            print(h.log_tail(60))
            raise AssertionError(f"job {jid} ended {state}")
        print(f"Slurm job {jid}: {time.time() - t0:.1f} s from submit to COMPLETED")
        files = L.assert_same_exports(os.path.join(tmp, "out-direct"), os.path.join(tmp, "out-slurm"))
        print(f"byte-identical: {', '.join(files)}")
        log = L.read(os.path.join(work, "slurm.log"))
        assert f"job={jid} restart=0 chain=1/1 start" in log and "finished (exit 0)" in log, log
        assert "requeue" not in log, "a finished run requeued:\n" + log
        assert "launch: srun-pmix" in log or "launch: mpirun" in log, log
        assert L.read(os.path.join(work, "slurm_job_id")).strip() == jid
        rep = json.loads(L.read(os.path.join(work, "qshard_report.json")))
        assert rep["ranks"] == 2, f"the Slurm run used {rep['ranks']} ranks"
        st = json.loads(qstest.run(["status", work, "--json"]).stdout)
        assert st["finished"] and st["slurm_job_id"] == jid and st["blocks_done"] == st["blocks_total"] == rep["blocks"], st
        assert h.job_field(jid, "Restarts") == "0"
    finally:
        h.stop()
    print("ok")


if __name__ == "__main__":
    main()
