"""One run per work dir (issue 15, item 7).

- While a `qshard run` holds WORK (it is stopped with SIGSTOP right after it
  took the lock, so the test does not race it), a second `qshard run` on the
  same WORK exits 2 with one line naming WORK/run.lock, the holder's host and
  its pid, and writes nothing (before: both computed and journaled every
  block and one died renaming a .partial). The holder, continued, finishes
  with exit 0 and every block journaled once.
- A holder killed with SIGKILL leaves the lock to the OS: the next run on that
  WORK is not refused; it resumes and finishes.
"""
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402
import hostile  # noqa: E402

qstest.need("numpy")
tmp = qstest.tmpdir("qs-work-lock-")
model, calib = os.path.join(tmp, "model"), os.path.join(tmp, "calib.npy")
hostile.synth(model, layers=4, hidden=128, vocab=128)
hostile.tokens(calib, vocab=128, rows=16, seq=32)


def start_and_stop(work, out):
    """Starts a run and stops it (SIGSTOP) as soon as it holds the lock."""
    p = hostile.popen(hostile.run_args(model, calib, work, out))
    lock = os.path.join(work, "run.lock")
    t_end = time.time() + 120
    while time.time() < t_end and p.poll() is None:
        try:
            if f"pid {p.pid} " in open(lock).read():
                p.send_signal(signal.SIGSTOP)
                return p
        except OSError:
            pass
        time.sleep(0.002)
    p.kill()
    raise AssertionError(f"the run never held {lock} (exit {p.poll()}): {p.communicate()[1]}")


def blocks_done(work):
    try:
        return [int(x.split(" block ")[1].split()[0]) for x in open(os.path.join(work, "journal.log"))
                if " done xxh64=" in x]
    except OSError:
        return []


work, out = os.path.join(tmp, "work"), os.path.join(tmp, "out")
holder = start_and_stop(work, out)
try:
    p = qstest.run(hostile.run_args(model, calib, work, os.path.join(tmp, "out2")), expect=2, timeout=120)
    line = hostile.one_error_line(p, os.path.join(work, "run.lock"), "in use by another qshard run",
                                  f"host {socket.gethostname()}", f"pid {holder.pid}")
    qstest.check(not os.path.exists(os.path.join(tmp, "out2")), "the refused run created its --out")
    print(f"second run while the first holds the lock: {line}")
finally:
    holder.send_signal(signal.SIGCONT)
_, err = holder.communicate(timeout=300)
qstest.check(holder.returncode == 0, f"the holder failed after SIGCONT: {holder.returncode}\n{err}")
qstest.check(sorted(blocks_done(work)) == list(range(4)), f"blocks journaled: {blocks_done(work)}")
print("the holder finished; each block journaled once")

# a SIGKILLed holder: the OS releases the lock
work, out = os.path.join(tmp, "work-k"), os.path.join(tmp, "out-k")
victim = start_and_stop(work, out)
victim.kill()
victim.wait()
p = qstest.run(hostile.run_args(model, calib, work, out), timeout=300)
qstest.check(os.path.exists(os.path.join(out, "model.safetensors.index.json")), "the run after the kill did not finish")
print("after SIGKILL of the holder the next run was not refused and finished")
print("ok")
