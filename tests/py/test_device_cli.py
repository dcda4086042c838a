"""`--device cpu|cuda|auto` on the command line (docs/gpu.md): on a machine
without a GPU, `cuda` exits 2 with exactly one line saying no CUDA device was
found (run, eval, layer; a job file's `device` key too; from one rank only
under mpirun) and `auto` computes on the CPU, with the CPU's results. On a
machine with a GPU, `run`/`eval --device cuda` refuse with one line (their
block forward is not on the GPU yet). Writes and reads real files."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qstest  # noqa: E402

np = qstest.need("numpy")


def one_line(p, what):
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    qstest.check(len(lines) == 1, f"{what}: expected one line on stderr, got {len(lines)}:\n{p.stderr}")
    return lines[0]


def main():
    tmp = qstest.tmpdir()
    tiny = qstest.source("tests", "fixtures", "hf_tiny", "llama")
    tokens = os.path.join(tiny, "tokens.npy")
    work, out = os.path.join(tmp, "work"), os.path.join(tmp, "out")
    run_args = ["run", "--model", tiny, "--calib", tokens, "--work", work, "--out", out]

    # which machine is this: ask qshard itself (layer needs no model)
    rng = np.random.default_rng(3)
    w = rng.standard_normal((32, 128)).astype(np.float32)
    x = rng.standard_normal((300, 128)).astype(np.float32)
    wp, xp = os.path.join(tmp, "w.npy"), os.path.join(tmp, "x.npy")
    np.save(wp, w)
    np.save(xp, x)
    layer = ["layer", "--weight", wp, "--inputs", xp, "--act-order", "--json"]
    p = qstest.run(layer + ["--out", os.path.join(tmp, "qc.npy"), "--device", "cuda"], expect=None)
    has_gpu = p.returncode == 0
    if not has_gpu:
        line = one_line(p, "layer --device cuda")
        qstest.check(p.returncode == 2 and "no CUDA device was found" in line, f"layer --device cuda: {p.returncode} {line}")

    # run --device cuda: exit 2 and one line without a GPU; a clear refusal with one
    p = qstest.run(run_args + ["--device", "cuda"], expect=None)
    line = one_line(p, "run --device cuda")
    if has_gpu:
        qstest.check(p.returncode == 1 and "does not run its block forward on the GPU yet" in line, line)
    else:
        qstest.check(p.returncode == 2, f"run --device cuda exited {p.returncode}, expected 2")
        qstest.check(line.startswith("qshard run: error: --device cuda: no CUDA device was found ("), line)
    qstest.check(not os.path.exists(out), "run --device cuda wrote an output directory")

    # the same from a job file's key, and from two MPI ranks: still one line
    job = os.path.join(tmp, "job.ini")
    with open(job, "w") as f:
        f.write(f"[model]\nmodel = {tiny}\n[calibration]\ncalib = {tokens}\n[run]\ndevice = cuda\n"
                f"work = {work}\n[output]\nout = {out}\n")
    p = qstest.run(["run", job], expect=None)
    line = one_line(p, "run JOB (device = cuda)")
    qstest.check(("no CUDA device was found" in line and p.returncode == 2) or has_gpu, line)
    p = qstest.mpirun(2, run_args + ["--device", "cuda"], expect=None)
    n = p.stderr.count("no CUDA device was found") + p.stderr.count("does not run its block forward")
    qstest.check(n == 1 and p.returncode != 0, f"2 ranks: the reason should be said once, got {n}:\n{p.stderr}")

    # a value that is no device
    p = qstest.run(run_args + ["--device", "gpu"], expect=2)
    qstest.check("--device: expected cpu, cuda or auto, got 'gpu'" in one_line(p, "--device gpu"), p.stderr)
    p = qstest.run(["eval", "--model", tiny, "--tokens", tokens, "--device", "tpu"], expect=2)

    # eval: cuda refused like run; auto and cpu give the same numbers
    p = qstest.run(["eval", "--model", tiny, "--tokens", tokens, "--device", "cuda"], expect=None)
    line = one_line(p, "eval --device cuda")
    qstest.check((p.returncode == 2 and "no CUDA device was found" in line) or
                 (has_gpu and p.returncode == 1), line)
    cpu = json.loads(qstest.run(["eval", "--model", tiny, "--tokens", tokens, "--json"]).stdout)
    auto = json.loads(qstest.run(["eval", "--model", tiny, "--tokens", tokens, "--json", "--device", "auto"]).stdout)
    qstest.check(cpu["nll"] == auto["nll"] and cpu["tokens"] == auto["tokens"], f"eval auto {auto} != cpu {cpu}")

    # qshard loads the CUDA backend only when asked: it links neither cuBLAS nor
    # cuSOLVER (they cost every process ~250 MB and up to a second at start)
    import subprocess
    ldd = subprocess.run(["ldd", qstest.qshard()], capture_output=True, text=True).stdout
    qstest.check("libcublas" not in ldd and "libcusolver" not in ldd, f"qshard links the CUDA libraries:\n{ldd}")
    env = dict(os.environ, QS_CUDA_MODULE=os.path.join(tmp, "no-such-module.so"))
    p = qstest.run(layer + ["--out", os.path.join(tmp, "qm.npy"), "--device", "cuda"], expect=2, env=env)
    line = one_line(p, "layer --device cuda without the module")
    qstest.check("no CUDA device was found" in line and ("did not load" in line or "without CUDA" in line), line)

    # layer: auto without a GPU is the CPU, bit for bit
    outs = {}
    for dev in ("cpu", "auto"):
        q, codes = os.path.join(tmp, f"q_{dev}.npy"), os.path.join(tmp, f"c_{dev}.npy")
        p = qstest.run(layer + ["--out", q, "--codes", codes, "--device", dev])
        outs[dev] = (np.load(q), np.load(codes), json.loads(p.stdout))
    if not has_gpu:
        qstest.check(np.array_equal(outs["cpu"][0], outs["auto"][0]) and np.array_equal(outs["cpu"][1], outs["auto"][1]),
                     "layer --device auto differs from --device cpu on a machine without a GPU")
        qstest.check(outs["auto"][2]["device"] == "cpu", f"layer --device auto reported {outs['auto'][2]['device']}")
    print(f"device_cli: ok ({'a GPU is present' if has_gpu else 'no GPU here'})")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAIL: {e}")
        sys.exit(1)
