"""`qshard run --method omniquant` end to end, with real MPI ranks.

- Synthetic llama, OPT and BLOOM (3 blocks each), LWC + LET: the exports
  (GPTQ safetensors, GGUF for llama) are byte-identical for 1, 2 and 3 ranks,
  for 1 and 2 threads, and when `qshard export` makes them again from the work
  dir; the pipelined schedule runs too.
- The export holds exactly the in-memory quantized model: `qshard eval` of the
  export gives the same logits, bit for bit, and the same NLL as a test tool
  that runs OmniQuant on the whole model in one process (tests/unit/omni_tool.c),
  on a bf16 model (so LET's folded norms are rounded to the model's dtype).
- PyPI safetensors + NumPy unpacking of qweight/qzeros/scales equals the
  HDF5 archive's codes, zeros and scales (read with h5py); the archive and the
  block checkpoints hold the loss curve, γ/β, LET's scales and shifts, and the
  folded norms, which equal the exported norm tensors.
- SIGKILL of a random rank mid-training, then the same command again: the
  resumed export is byte-identical to an uninterrupted run. SIGUSR1 while a
  block trains stops within the block (exit 3), and the resume is identical.
- Bad options exit 2 with one line saying what is allowed; a work dir made with
  other OmniQuant options is refused, naming the option.
"""
import filecmp
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402

np = qstest.need("numpy")
qstest.need("safetensors")
import safetensors.numpy as safetensors_numpy  # noqa: E402
h5py = qstest.need("h5py")
tmp = qstest.tmpdir()
MPIEXEC = os.environ.get("QS_MPIEXEC", "mpirun")
rnd = random.Random(int(os.environ.get("QS_TEST_SEED", "4242")))
TOOL = os.environ.get("QS_OMNI_TOOL") or os.path.join(os.environ.get("QS_BUILD_DIR", "build"), "tests", "omni_tool")


def model_files(d):
    return sorted(f for f in os.listdir(d) if f.endswith((".safetensors", ".json", ".gguf")))


def same_exports(a, b):
    fa, fb = model_files(a), model_files(b)
    qstest.check(fa == fb, f"{a} and {b} hold different files: {fa} vs {fb}")
    for f in fa:
        qstest.check(filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False), f"{f} differs: {a} vs {b}")


def synth(arch, name, *extra, layers=3):
    d = os.path.join(tmp, name)
    pos = [] if arch == "bloom" else ["--max-pos", 128]
    qstest.run(["synth", "--arch", arch, "--layers", layers, "--hidden", 64, "--heads", 4, "--vocab", 256, "--seed", 5,
                *pos, "--out", d, *extra])
    return d


def args(model, calib, work, out, *extra):
    return ["run", "--model", model, "--calib", calib, "--work", work, "--out", out, "--micro-batch", 4,
            "--method", "omniquant", "--asym", "--group-size", 32, *extra]


OMNI = ["--bits", 4, "--epochs", 2, "--let"]

models = {
    "llama": synth("llama", "llama", "--kv-heads", 2, "--ffn", 160),
    "opt": synth("opt", "opt"),
    "bloom": synth("bloom", "bloom"),
}
calib = os.path.join(tmp, "calib.npy")
np.save(calib, np.random.default_rng(1).integers(0, 256, size=(8, 32), dtype=np.int32))

# --- P = 1, 2, 3 byte-identical (LWC + LET), 1 vs 2 threads, pipelined -----------------
t0 = time.time()
for arch, model in models.items():
    fmts = ["--formats", "gptq,gguf,hdf5" if arch == "llama" else "gptq,hdf5"]
    outs = []
    for np_ in (1, 2, 3):
        w, o = os.path.join(tmp, f"w-{arch}-{np_}"), os.path.join(tmp, f"o-{arch}-{np_}")
        p = qstest.mpirun(np_, args(model, calib, w, o, *OMNI, *fmts))
        qstest.check("OmniQuant 4-bit" in p.stdout + p.stderr, f"the run says what it does:\n{p.stdout}{p.stderr}")
        outs.append(o)
    for o in outs[1:]:
        same_exports(outs[0], o)
    rep = json.load(open(os.path.join(tmp, f"w-{arch}-3", "qshard_report.json")))
    qstest.check(len(rep["omniquant"]) == 3 and all(len(b["omniquant"]["loss"]) == 2 for b in rep["omniquant"]),
                 f"{arch}: the report has each block's loss curve: {rep.get('omniquant')}")
    print(f"{arch}: P=1,2,3 identical (LWC+LET)")
one = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
qstest.run(args(models["llama"], calib, os.path.join(tmp, "w-1t"), os.path.join(tmp, "o-1t"), *OMNI,
                "--formats", "gptq,gguf"), env=one)
same_exports(os.path.join(tmp, "o-llama-1"), os.path.join(tmp, "o-1t"))
print("llama: 1 thread == 2 threads")
qstest.mpirun(2, args(models["opt"], calib, os.path.join(tmp, "w-pipe"), os.path.join(tmp, "o-pipe"), *OMNI,
                      "--schedule", "pipelined"))
qstest.check(os.path.exists(os.path.join(tmp, "o-pipe", "model.safetensors.index.json")), "pipelined: no export")
# `qshard export` from the work dir writes the same files (the folded tensors come from the checkpoints)
qstest.run(["export", "--work", os.path.join(tmp, "w-llama-2"), "--format", "gptq", "--out", os.path.join(tmp, "x-llama")])
qstest.run(["export", "--work", os.path.join(tmp, "w-llama-2"), "--format", "gguf", "--out",
            os.path.join(tmp, "x-llama", "model.gguf")])
same_exports(os.path.join(tmp, "o-llama-1"), os.path.join(tmp, "x-llama"))
print(f"determinism runs: {time.time() - t0:.1f} s; qshard export from the work dir: identical")

# --- the export is the in-memory model: logits and NLL identical ---------------------------
if not os.path.exists(TOOL):
    qstest.skip(f"{TOOL} is missing (built with the tests)")
bf = synth("llama", "llama-bf16", "--kv-heads", 2, "--ffn", 160, "--dtype", "bf16")
evalset = os.path.join(tmp, "eval.npy")
np.save(evalset, np.random.default_rng(2).integers(0, 256, size=(6, 32), dtype=np.int32))
w, o = os.path.join(tmp, "w-bf"), os.path.join(tmp, "o-bf")
qstest.mpirun(2, ["run", "--model", bf, "--calib", calib, "--work", w, "--out", o, "--micro-batch", 4, "--method",
                  "omniquant", "--asym", "--group-size", 32, "--bits", 3, "--epochs", 2, "--let", "--formats",
                  "gptq,hdf5"])
ev = json.loads(qstest.run(["eval", "--model", o, "--tokens", evalset, "--json", "--compute-dtype", "f32", "--dump-logits",
                            os.path.join(tmp, "export-logits.npy")]).stdout)
p = subprocess.run([TOOL, bf, calib, evalset, os.path.join(tmp, "tool-logits.npy"), "3", "32", "1", "2", "4"],
                   capture_output=True, text=True)
qstest.check(p.returncode == 0, f"omni_tool failed:\n{p.stdout}\n{p.stderr}")
tool_nll = float([l for l in p.stdout.splitlines() if l.startswith("nll ")][0].split()[1])
a, b = np.load(os.path.join(tmp, "export-logits.npy")), np.load(os.path.join(tmp, "tool-logits.npy"))
qstest.check(a.shape == b.shape and np.array_equal(a, b),
             f"export logits differ from the in-memory model's (max |diff| {np.abs(a - b).max()})")
qstest.check(ev["nll"] == tool_nll, f"qshard eval NLL {ev['nll']!r} != in-memory {tool_nll!r}")
print(f"bf16 llama W3 LWC+LET: export NLL {ev['nll']!r} == in-memory NLL {tool_nll!r}, logits identical")

# --- independent readers: safetensors + NumPy vs the archive; what the archive holds ---------
def bf16_tensor(path, name):
    """NumPy has no bfloat16: the raw bytes, widened to f32 (the header read by hand)."""
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    info = json.loads(raw[8:8 + n])[name]
    a, b = info["data_offsets"]
    u = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.uint16).astype(np.uint32) << 16
    return u.view(np.float32).reshape(info["shape"])


st = {}
for f in os.listdir(o):
    if f.endswith(".safetensors"):
        with safetensors_numpy.safe_open(os.path.join(o, f), framework="numpy") as sf:
            for k in sf.keys():
                if sf.get_slice(k).get_dtype() == "BF16":
                    st[k] = bf16_tensor(os.path.join(o, f), k)
                else:
                    st[k] = sf.get_tensor(k)
h5 = h5py.File(os.path.join(o, "qshard.h5"), "r")


def unpack_rows(packed, bits, n):
    """int32 words [words, cols] → n values [n, cols]: per column, one bit stream down
    the rows, least significant bits first (GPTQ's packing, written here from its definition)."""
    w = packed.astype(np.int64) & 0xFFFFFFFF
    stream = np.stack([(w >> b) & 1 for b in range(32)], axis=1).reshape(-1, *w.shape[1:])
    out = np.zeros((n,) + w.shape[1:], dtype=np.int64)
    for b in range(bits):
        out |= stream[b::bits][:n] << b
    return out


checked = 0
for blk_name in h5["blocks"]:
    g = h5["blocks"][blk_name]
    om = g["omniquant"]
    qstest.check(om["loss"].shape == (2,) and om.attrs["epochs"] == 2, f"{blk_name}: loss curve {om['loss'].shape}")
    params = set(om["params"].keys())
    qstest.check({"let.attn_scale", "let.mlp_scale", "let.vo_scale"} <= params, f"{blk_name}: LET params {params}")
    for lin in [k for k in g.keys() if k != "omniquant"]:
        codes, scales, zeros = g[lin]["codes"][...], g[lin]["scales"][...], g[lin]["zeros"][...]
        out_f, in_f = codes.shape
        pre = lin[: -len(".weight")]
        gam = om["params"][pre + ".lwc_gamma"]
        qstest.check(gam.shape == (out_f, in_f // 32), f"{lin}: gamma shape {gam.shape}")
        q = unpack_rows(st[pre + ".qweight"], 3, in_f)  # [in, out]
        qstest.check(np.array_equal(q.T, codes.astype(np.int64)), f"{lin}: unpacked qweight != archive codes")
        z = unpack_rows(st[pre + ".qzeros"].T, 3, out_f).T + 1  # v1 stores zero - 1
        qstest.check(np.array_equal(z, zeros.astype(np.int64)), f"{lin}: unpacked qzeros != archive zeros")
        qstest.check(np.array_equal(st[pre + ".scales"].astype(np.float32), scales), f"{lin}: scales differ")
        checked += 1
    for name in om["fp"].keys():
        qstest.check(np.array_equal(st[name].astype(np.float32), om["fp"][name][...]),
                     f"{name}: exported tensor != the archive's folded value")
    qstest.check(any(n.endswith("input_layernorm.weight") for n in om["fp"].keys()), f"{blk_name}: folded norms")
qstest.check(checked == 3 * 7, f"checked {checked} linears")
ck = h5py.File(os.path.join(w, "blocks", "block_00001.h5"), "r")
qstest.check(np.array_equal(ck["omniquant"]["loss"][...], h5["blocks"]["block_00001"]["omniquant"]["loss"][...]),
             "the block checkpoint holds the same loss curve as the archive")
print(f"{checked} linears: safetensors + NumPy == archive codes/zeros/scales; folded norms exported")

# --- SIGKILL mid-training, resume: byte-identical ---------------------------------------------
big = synth("llama", "llama5", "--kv-heads", 2, "--ffn", 160, layers=5)
calib5 = os.path.join(tmp, "calib5.npy")
np.save(calib5, np.random.default_rng(3).integers(0, 256, size=(16, 32), dtype=np.int32))
KILL = ["--bits", 3, "--epochs", 16, "--let", "--checkpoint-format", "gptq_v2"]  # v1 cannot store a zero point of 0


def kcmd(np_, work, out):
    return [MPIEXEC, "-np", str(np_), "--oversubscribe", qstest.qshard()] + [str(x) for x in
                                                                            args(big, calib5, work, out, *KILL)]


ref = {}
for np_ in (2, 3):
    t = time.time()
    p = subprocess.run(kcmd(np_, os.path.join(tmp, f"kref{np_}-w"), os.path.join(tmp, f"kref{np_}-o")),
                       capture_output=True, text=True)
    qstest.check(p.returncode == 0, p.stderr)
    ref[np_] = (os.path.join(tmp, f"kref{np_}-o"), time.time() - t)
same_exports(ref[2][0], ref[3][0])
print(f"uninterrupted: P=2 {ref[2][1]:.1f} s, P=3 {ref[3][1]:.1f} s")


def blocks_done(work):
    try:
        return open(os.path.join(work, "journal.log")).read().count(" done xxh64=")
    except OSError:
        return 0


kills = 0
for i, np_ in enumerate((2, 3, 2)):
    work, out = os.path.join(tmp, f"kill{i}-w"), os.path.join(tmp, f"kill{i}-o")
    after, delay = rnd.randrange(0, 3), rnd.uniform(0, ref[np_][1] / 5 / 3)
    proc = subprocess.Popen(kcmd(np_, work, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, t_reached = False, None
    while proc.poll() is None:
        if not killed:
            if t_reached is None and blocks_done(work) >= after:
                t_reached = time.time()
            if t_reached is not None and time.time() - t_reached >= delay:
                pids = subprocess.run(["pgrep", "-f", f"qshard run .*--work {work} "], capture_output=True,
                                      text=True).stdout.split()
                if pids:
                    os.kill(int(rnd.choice(pids)), signal.SIGKILL)
                    killed = True
        time.sleep(0.01)
    proc.communicate()
    done = blocks_done(work)
    kills += killed and done < 5  # killed while blocks were still training
    p = subprocess.run(kcmd(np_, work, out), capture_output=True, text=True, timeout=600)
    qstest.check(p.returncode == 0, f"resume failed ({p.returncode}):\n{p.stderr}")
    same_exports(ref[np_][0], out)
    print(f"kill {i}: P={np_} after {after} blocks + {delay:.2f}s killed={killed}, {done} blocks journaled: identical")
qstest.check(kills >= 2, f"only {kills} of 3 runs were killed while blocks were training")

# --- SIGUSR1 while a block trains: exit 3 without waiting for the block, resume identical ------------
LONG = ["--bits", 3, "--epochs", 500, "--checkpoint-format", "gptq_v2"]
p = subprocess.run([MPIEXEC, "-np", "2", "--oversubscribe", qstest.qshard()] +
                   [str(x) for x in args(models["llama"], calib, os.path.join(tmp, "usr1-ref-w"),
                                         os.path.join(tmp, "usr1-ref-o"), *LONG)], capture_output=True, text=True)
qstest.check(p.returncode == 0, p.stderr)
blk_s = json.load(open(os.path.join(tmp, "usr1-ref-w", "qshard_report.json")))["omniquant"][0]["omniquant"]["seconds"]
work, out = os.path.join(tmp, "usr1-w"), os.path.join(tmp, "usr1-o")
proc = subprocess.Popen([MPIEXEC, "-np", "2", "--oversubscribe", qstest.qshard()] +
                        [str(x) for x in args(models["llama"], calib, work, out, *LONG)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
while blocks_done(work) < 1 and proc.poll() is None:
    time.sleep(0.01)
time.sleep(blk_s / 4)  # block 1 is training now
t_sig = time.time()
proc.send_signal(signal.SIGUSR1)  # mpirun forwards it to the ranks
_, err = proc.communicate(timeout=120)
t_exit = time.time() - t_sig
qstest.check(proc.returncode == 3, f"SIGUSR1 mid-training should exit 3, got {proc.returncode}:\n{err}")
qstest.check(blocks_done(work) == 1, f"{blocks_done(work)} blocks journaled: the stop should land inside block 1")
# the signal came a quarter into block 1: waiting for the block would take at least 3/4 of it more
qstest.check(t_exit < 0.75 * blk_s,
             f"the stop took {t_exit:.2f} s, a block trains for {blk_s:.2f} s: it waited for the block")
p = subprocess.run([MPIEXEC, "-np", "2", "--oversubscribe", qstest.qshard()] +
                   [str(x) for x in args(models["llama"], calib, work, out, *LONG)], capture_output=True, text=True)
qstest.check(p.returncode == 0, p.stderr)
same_exports(os.path.join(tmp, "usr1-ref-o"), out)
print(f"SIGUSR1 inside a block ({blk_s:.1f} s of training): exit 3 after {t_exit:.2f} s; resumed identical")

# --- a work dir of other OmniQuant options is refused ------------------------------------------
p = qstest.run(args(big, calib5, os.path.join(tmp, "kill0-w"), os.path.join(tmp, "kill0-o"), "--bits", 3, "--epochs",
                    7, "--let"), expect=2)
qstest.check("epochs: 16 → 7" in p.stderr, f"fingerprint names the option: {p.stderr}")

# --- bad options: exit 2, one line --------------------------------------------------------------
post = os.path.join(tmp, "opt-post")
shutil.copytree(models["opt"], post)
cfg = json.load(open(os.path.join(post, "config.json")))
cfg["do_layer_norm_before"] = False
json.dump(cfg, open(os.path.join(post, "config.json"), "w"))
bad = [
    (["--epochs", 0], "--epochs"),
    (["--lwc-lr", -1e-3], "--lwc-lr"),
    (["--let-lr", -0.5], "--let-lr"),
    (["--lwc", "false"], "--let"),
    (["--act-order"], "GPTQ"),
]
for extra, word in bad:
    p = qstest.run(args(models["llama"], calib, os.path.join(tmp, "w-bad"), os.path.join(tmp, "o-bad"), *extra),
                   expect=2)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    qstest.check(len(lines) == 1 and word in lines[0], f"{extra}: expected one line naming {word}:\n{p.stderr}")
p = qstest.run(args(post, calib, os.path.join(tmp, "w-bad2"), os.path.join(tmp, "o-bad2"), "--let"), expect=2)
lines = [l for l in p.stderr.splitlines() if l.strip()]
qstest.check(len(lines) == 1 and "--let" in lines[0] and "pre-LN" in lines[0], f"post-LN OPT --let:\n{p.stderr}")
qstest.run(args(post, calib, os.path.join(tmp, "w-post"), os.path.join(tmp, "o-post"), "--bits", 4, "--epochs", 1))
print("bad options: exit 2 with one line; post-LN OPT trains LWC alone")
print("ok")
