"""qs_slurm_testlib.py — helpers the Slurm tests share (test-only code).

Calibration tokens made with PyPI `tokenizers`, synthetic models, the probe
that tells whether `qshard run` can stop and resume yet, and the comparison of
two export directories.
"""
import glob
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import slurm_harness  # noqa: E402  (re-exported for the tests)

SKIP = 77


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(SKIP)


def start_harness():
    """A started SlurmHarness, or skip (77) saying why Slurm cannot run here."""
    h = slurm_harness.SlurmHarness()
    try:
        h.start()
    except slurm_harness.HarnessUnavailable as e:
        skip(f"cannot start a Slurm test cluster: {e}")
    return h


def tinystories_tokens(tokenizer_json, text_file, out_npy, rows=64, seq=128, seed=0):
    """[rows, seq] int32 windows of the text, BOS first, encoded by PyPI tokenizers."""
    try:
        import numpy as np
        from tokenizers import Tokenizer
    except ImportError as e:
        skip(f"python module missing ({e}); scripts/install_deps.sh puts numpy and tokenizers in .venv")
    tok = Tokenizer.from_file(tokenizer_json)
    with open(text_file, encoding="utf-8") as f:
        text = f.read()
    ids = np.array(tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)
    bos = tok.token_to_id("<s>")
    bos = 1 if bos is None else bos
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - seq, size=rows)
    arr = np.stack([np.concatenate([[bos], ids[s:s + seq - 1]]) for s in starts]).astype(np.int32)
    np.save(out_npy, arr)
    return arr.shape


def need_numpy():
    try:
        import numpy  # noqa: F401
    except ImportError:
        skip("python module numpy is not installed (scripts/install_deps.sh puts it in .venv)")


def random_tokens(out_npy, vocab, rows, seq, seed=0):
    import numpy as np
    arr = np.random.default_rng(seed).integers(0, vocab, size=(rows, seq)).astype(np.int32)
    np.save(out_npy, arr)


def synth_model(qshard, out_dir, layers, hidden, vocab=512):
    subprocess.run([qshard, "synth", "--arch", "llama", "--layers", str(layers), "--hidden", str(hidden),
                    "--vocab", str(vocab), "--max-pos", "512", "--out", out_dir],
                   check=True, capture_output=True, text=True)


def run_implemented(qshard):
    p = subprocess.run([qshard, "run", "--help"], capture_output=True, text=True)
    return p.returncode == 0 and "not implemented" not in (p.stdout + p.stderr)


def mpirun_cmd(np_, qshard, args):
    mpiexec = os.environ.get("QS_MPIEXEC") or "mpirun"
    extra = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    return [mpiexec, "-np", str(np_), "--oversubscribe"] + extra + [qshard] + [str(a) for a in args]


def resume_probe(qshard, work_base):
    """(True, '') when `qshard run` stops at a block boundary on SIGUSR1 with exit 3 and
    leaves a journal (issue 6); else (False, why). Runs a small synthetic model on 2 ranks."""
    p = subprocess.run([qshard, "run", "--help"], capture_output=True, text=True)
    if "--force-resume" not in p.stdout:
        return False, "`qshard run --help` does not mention --force-resume"
    model = os.path.join(work_base, "probe-model")
    synth_model(qshard, model, layers=6, hidden=128)
    calib = os.path.join(work_base, "probe-calib.npy")
    random_tokens(calib, 512, 16, 64)
    work = os.path.join(work_base, "probe-work")
    cmd = mpirun_cmd(2, qshard, ["run", "--model", model, "--calib", calib, "--work", work,
                                 "--out", os.path.join(work_base, "probe-out"), "--group-size", "32"])
    errf = os.path.join(work_base, "probe-stderr.txt")
    with open(errf, "w") as ef:
        proc = subprocess.Popen(cmd, stderr=ef, stdout=subprocess.DEVNULL)
    journal = os.path.join(work, "journal.log")
    sent = False
    t_end = time.time() + 120
    # interrupt once the first block is journaled done (the journal is the run's record, issue 6)
    while proc.poll() is None and time.time() < t_end:
        if journal_blocks_done(journal):
            proc.send_signal(signal.SIGUSR1)   # mpirun forwards USR1 to the ranks
            sent = True
            break
        time.sleep(0.05)
    try:
        rc = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    if not sent:
        return False, ("the probe run journaled no finished block before it ended (exit %d):\n" % rc
                       + read(errf)[-2000:])
    if rc != 3:
        return False, (f"a run signalled with SIGUSR1 exited {rc}, not 3 (interrupted, resumable): "
                       "resume is not built yet (issue 6)")
    if not os.path.exists(os.path.join(work, "journal.log")):
        return False, "an interrupted run left no journal.log in its work dir (issue 6)"
    return True, ""


def journal_blocks_done(journal):
    """Blocks journaled done ("... block N done ...") in WORK/journal.log, in order."""
    if not os.path.exists(journal):
        return []
    return [int(m) for m in re.findall(r"block (\d+) done", read(journal))]


def model_files(out_dir):
    """The exported model files that must be byte-identical: *.safetensors and *.json."""
    names = [os.path.basename(p) for p in glob.glob(os.path.join(out_dir, "*.safetensors"))]
    names += [os.path.basename(p) for p in glob.glob(os.path.join(out_dir, "*.json"))]
    return sorted(names)


def assert_same_exports(a, b):
    fa, fb = model_files(a), model_files(b)
    if not fa or not any(n.endswith(".safetensors") for n in fa):
        raise AssertionError(f"{a}: no *.safetensors exported ({fa})")
    if fa != fb:
        raise AssertionError(f"different files: {a}: {fa}\n{b}: {fb}")
    for n in fa:
        with open(os.path.join(a, n), "rb") as x, open(os.path.join(b, n), "rb") as y:
            if x.read() != y.read():
                raise AssertionError(f"{n} differs between {a} and {b}")
    return fa


def wait_for(pred, timeout, what, interval=0.5):
    t_end = time.time() + timeout
    while time.time() < t_end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def job_file(path, model, calib, work, out, extra="", slurm=""):
    """A job file like jobs/tinystories.ini with absolute paths."""
    with open(path, "w") as f:
        f.write(f"""[model]
model = {model}
[calibration]
calib = {calib}
[quantization]
method = gptq
bits = 4
group-size = 32
{extra}
[run]
schedule = exact
micro-batch = 8
work = {work}
[output]
out = {out}
formats = gptq
[slurm]
nodes = 1
tasks-per-node = 2
cpus-per-task = 1
{slurm}
""")
    return path
