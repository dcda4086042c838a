"""`qshard run --device cuda` and `qshard eval --device cuda` end to end on
tinystories-656K against `--device cpu` (label gpu on a real GPU; label
cuda-emu with QS_CUDA_MODULE naming the emulated module of tests/gpu_emu).

- run: the blocks' forward, Hessians and GPTQ on the device. The export's
  GPTQ codes equal the CPU export's except near rounding ties: the first
  stage of block 0 (q/k/v: the same Hessian up to ~1e-7) within 1% of the
  codes, the fraction of every linear printed; the held-out NLL of the two
  exports within 1% of each other.
- eval: the same export scored on the device and on the CPU: NLL within
  1e-4, logits within 1e-4 relative.
- `--ranks` (emulator only: a real GPU cannot be doubled): 2 ranks with
  a device each give byte-identical exports to 1 rank, with the activations
  handed off through host memory (MPI) and as device buffers through the
  NCCL transport (the emulator's NCCL runs on MPI); the pipelined schedule
  on 2 devices over NCCL (picked by --transport auto) against the same over
  MPI, byte for byte — on 64 calibration tokens (a device run against a
  device run needs no well-conditioned Hessian). Emulator only too: a device
  with too little free memory is refused before the run with exit 4 and one
  line.
Under the sanitizers (CI runs label cuda-emu there) the qshard processes run
without leak detection: Open MPI and hwloc leave their allocations at exit;
the emulated kernels' memory accesses are still checked. Times here (2
cores): ~2 min each part, ~4 min under ASan.
- OmniQuant and replicas on the device are refused (exit 2, one line); a work dir made on
  the CPU is not resumed on the GPU (its numbers differ); --transport nccl
  without a GPU: exit 2.
Skips (77) without a GPU."""
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qstest  # noqa: E402

np = qstest.need("numpy")
tokenizers = qstest.need("tokenizers")
from safetensors import safe_open  # noqa: E402  (qstest.need checked numpy; safetensors comes with the venv)

EMU = "cuda_emu" in os.environ.get("QS_CUDA_MODULE", "")
RANKS = "--ranks" in sys.argv
if RANKS and not EMU:
    qstest.skip("--ranks needs the emulator (QS_CUDA_MODULE=libqshard_cuda_emu.so): one GPU cannot host 2 ranks")
# Open MPI and hwloc leave allocations behind at exit: no leak report from the qshard processes
os.environ["ASAN_OPTIONS"] = ":".join(x for x in (os.environ.get("ASAN_OPTIONS", ""), "detect_leaks=0") if x)
M = qstest.source("jobs", "models", "tinystories-656K")
tmp = qstest.tmpdir()


def one_line_error(p, code, *words):
    # qshard's lines (mpirun adds its report of a rank's exit code, ASan its warnings)
    lines = [l for l in p.stderr.splitlines() if l.startswith("qshard")]
    qstest.check(p.returncode == code, f"exit {p.returncode}, expected {code}: {p.stderr}")
    qstest.check(len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{p.stderr}")
    for w in words:
        qstest.check(w in lines[0], f"'{w}' not in: {lines[0]}")
    return lines[0]


def tensors(d):
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        with safe_open(f, "numpy") as g:
            for k in g.keys():
                if k.endswith((".qweight", ".g_idx", ".qzeros")):
                    out[k] = g.get_tensor(k)
    return out


def codes(q):  # qweight [in/8, out] int32 → 4-bit codes [in, out]
    q = q.view(np.uint32)
    return np.stack([(q >> (4 * i)) & 15 for i in range(8)], 1).reshape(-1, q.shape[1])


def files(d):
    return {os.path.basename(f): open(f, "rb").read() for f in glob.glob(os.path.join(d, "*.safetensors"))}


tok = tokenizers.Tokenizer.from_file(os.path.join(M, "tokenizer.json"))
text = open(os.path.join(M, "README.md"), encoding="utf-8").read()
shared_text = os.path.join(os.environ.get("QS_SHARED") or qstest.source("..", "shared"), "text",
                           "tinystories_valid_head.txt")
if os.path.exists(shared_text):  # else the model's README: fewer, but real, words
    text = open(shared_text, encoding="utf-8").read()[:200000]
ids = tok.encode(text).ids
L = 16  # short rows: the emulated attention's cost grows with L²
calib, heldout = os.path.join(tmp, "calib.npy"), os.path.join(tmp, "heldout.npy")
qstest.check(len(ids) >= 48 * L, f"only {len(ids)} tokens of text")
# 512 calibration tokens: more than the 384 inputs of down_proj (fewer make its Hessian singular but for the damping,
# and GPTQ chaotic: rounding-level differences then change many codes at the same quality, docs/gpu.md)
np.save(calib, np.array(ids[: 32 * L], dtype=np.int32).reshape(32, L))
np.save(heldout, np.array(ids[32 * L: 48 * L], dtype=np.int32).reshape(16, L))
if RANKS:
    np.save(calib, np.array(ids[: 4 * 16], dtype=np.int32).reshape(4, 16))


def run(dev, work, out, *extra, np_=1, expect=0, env=None, quiet=True):
    args = ["run", "--model", M, "--calib", calib, "--work", work, "--out", out, "--device", dev, "--bits", 4,
            "--group-size", 32, "--act-order", "--compute-dtype", "f32", "--formats", "gptq", *extra]
    if quiet:
        args.append("--quiet")
    e = dict(os.environ, **(env or {}))
    if np_ == 1:
        return qstest.run(args, expect=expect, env=e)
    return qstest.mpirun(np_, args, expect=expect, env=e)


p = run("cuda", os.path.join(tmp, "w-gpu"), os.path.join(tmp, "o-gpu"), expect=None)
if p.returncode == 2 and "no CUDA device" in p.stderr and not EMU:  # the emulated device is always there
    qstest.skip(p.stderr.strip())
qstest.check(p.returncode == 0, f"run --device cuda exited {p.returncode}: {p.stderr}")

if RANKS:
    # two ranks, a device each: the same bytes as one rank, over MPI (through host memory) and over the
    # emulated NCCL (device buffers handed to the transport; tests/gpu_emu/emu_nccl.cpp, MPI underneath)
    for transport in ("mpi", "nccl"):
        p = run("cuda", os.path.join(tmp, f"w-gpu2-{transport}"), os.path.join(tmp, f"o-gpu2-{transport}"),
                "--transport", transport, np_=2, env={"QS_EMU_DEVICES": "2"}, quiet=False)
        qstest.check(f"activations handed off over {transport}" in p.stdout, f"not over {transport}:\n{p.stdout}")
        qstest.check(files(os.path.join(tmp, "o-gpu")) == files(os.path.join(tmp, f"o-gpu2-{transport}")),
                     f"--device cuda --transport {transport}: 2 ranks and 1 rank give different exports")
        print(f"--device cuda: 1 rank and 2 ranks over {transport} byte-identical")
    # the pipelined schedule on 2 devices (FP pass, then both stages at once): NCCL (--transport auto
    # picks it, every rank having a device) and MPI hand off the same numbers
    for transport in ("auto", "mpi"):
        p = run("cuda", os.path.join(tmp, f"w-pipe-{transport}"), os.path.join(tmp, f"o-pipe-{transport}"),
                "--schedule", "pipelined", "--transport", transport, np_=2, env={"QS_EMU_DEVICES": "2"}, quiet=False)
        want = "nccl" if transport == "auto" else "mpi"
        qstest.check(f"activations handed off over {want}" in p.stdout, f"pipelined, not over {want}:\n{p.stdout}")
    qstest.check(files(os.path.join(tmp, "o-pipe-auto")) == files(os.path.join(tmp, "o-pipe-mpi")),
                 "pipelined on 2 devices: NCCL and MPI hand-offs give different exports")
    print("pipelined on 2 devices: --transport auto picks NCCL; the same bytes as over MPI")
    # --transport nccl where --device auto found no GPU: one line, exit 2, before any work
    p = run("auto", os.path.join(tmp, "w-nccl"), os.path.join(tmp, "o-nccl"), "--transport", "nccl", np_=2,
            expect=None, env={"QS_EMU_NO_DEVICE": "1"})
    print(f"--transport nccl without GPUs: {one_line_error(p, 2, 'not every rank has a GPU')}")
    sys.exit(0)

run("cpu", os.path.join(tmp, "w-cpu"), os.path.join(tmp, "o-cpu"))

# --- the exports: codes equal but for rounding ties -------------------------------------------
a, b = tensors(os.path.join(tmp, "o-cpu")), tensors(os.path.join(tmp, "o-gpu"))
qstest.check(sorted(a) == sorted(b), "the two exports hold different tensors")
for k in sorted(a):
    if not k.endswith(".qweight"):
        continue
    frac = float(np.mean(codes(a[k]) != codes(b[k])))
    print(f"{k}: {100 * frac:.3f}% of the codes differ from the CPU's")
    if ".layers.0.self_attn." in k and k.split(".")[-2] in ("q_proj", "k_proj", "v_proj"):
        qstest.check(frac <= 0.01, f"{k}: {100 * frac:.3f}% of the codes differ (expected <= 1%)")
        g = k.replace(".qweight", ".g_idx")
        qstest.check(np.array_equal(a[g], b[g]), f"{g}: act-order differs on the same Hessian")


def evaluate(model, dev, logits):
    p = qstest.run(["eval", "--model", model, "--tokens", heldout, "--json", "--compute-dtype", "f32", "--device", dev,
                    "--dump-logits", logits])
    import json
    return json.loads(p.stdout.splitlines()[0])["nll"]


nll_cpu_export = evaluate(os.path.join(tmp, "o-cpu"), "cpu", os.path.join(tmp, "l-cpu-cpu.npy"))
nll_gpu_export = evaluate(os.path.join(tmp, "o-gpu"), "cpu", os.path.join(tmp, "l-gpu-cpu.npy"))
print(f"held-out NLL: CPU export {nll_cpu_export:.6f}, GPU export {nll_gpu_export:.6f}")
qstest.check(abs(nll_gpu_export - nll_cpu_export) <= 0.01 * nll_cpu_export, "the GPU export's NLL is off")

# --- eval on the device: the same numbers -------------------------------------------------------
nll_dev = evaluate(os.path.join(tmp, "o-gpu"), "cuda", os.path.join(tmp, "l-gpu-gpu.npy"))
la, lb = np.load(os.path.join(tmp, "l-gpu-cpu.npy")), np.load(os.path.join(tmp, "l-gpu-gpu.npy"))
rel = float(np.abs(la - lb).max() / np.abs(la).max())
print(f"eval --device cuda: NLL {nll_dev:.9f} vs cpu {nll_gpu_export:.9f} (|diff| {abs(nll_dev - nll_gpu_export):.2e}), "
      f"logits max relative difference {rel:.2e}")
qstest.check(abs(nll_dev - nll_gpu_export) <= 1e-4, "eval --device cuda: NLL not within 1e-4 of the CPU's")
qstest.check(rel <= 1e-4, "eval --device cuda: logits not within 1e-4 of the CPU's")

# --- refusals -------------------------------------------------------------------------------------
p = run("cuda", os.path.join(tmp, "w-omni"), os.path.join(tmp, "o-omni"), "--method", "omniquant", expect=None)
one_line_error(p, 2, "OmniQuant")
if EMU:  # two ranks need two devices (the emulator makes them; one H200 is one)
    p = run("cuda", os.path.join(tmp, "w-rep"), os.path.join(tmp, "o-rep"), "--replicas", 2, np_=2, expect=None,
            env={"QS_EMU_DEVICES": "2"})
    one_line_error(p, 2, "replicas")
p = run("cuda", os.path.join(tmp, "w-cpu"), os.path.join(tmp, "o-cpu2"), expect=None)
qstest.check(p.returncode == 2, f"a CPU work dir resumed on the GPU: exit {p.returncode}: {p.stderr}")
print("refused: OmniQuant on the device; replicas on the device; a CPU work dir on the GPU")

if EMU:
    # a device with 1 GiB free of 64: the plan does not fit, refused before the run
    p = run("cuda", os.path.join(tmp, "w-small"), os.path.join(tmp, "o-small"), expect=None,
            env={"QS_EMU_FREE_BYTES": str(1 << 30)})
    line = one_line_error(p, 4, "needs", "of device memory", "free")
    qstest.check(not os.path.exists(os.path.join(tmp, "o-small", "model.safetensors.index.json")),
                 "a run that does not fit wrote an export")
    print(f"too little device memory: exit 4: {line}")
p = run("cpu", os.path.join(tmp, "w-nccl-cpu"), os.path.join(tmp, "o-nccl-cpu"), "--transport", "nccl", expect=None)
one_line_error(p, 2, "--transport nccl needs --device cuda")
