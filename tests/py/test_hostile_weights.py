"""Finite but huge weights (issue 15, item 9).

- A q_proj element of 3e38 (finite in f32 and bf16): `qshard run` exits 2
  with one line naming the tensor and the row whose scale does not fit the
  export's fp16, before that block's checkpoint is written (before: exit 0,
  scales silently clamped to 65504, a loss of 1e80 reported).
- `qshard layer` on the same matrix: exit 2 naming the row (RTN and GPTQ);
  with --no-fp16-scales the f32 scales are allowed and it succeeds.
- `qshard layer` whose loss is not finite (H = 3e38 everywhere): exit 2
  naming the loss, never a success (before: "loss -nan" and exit 0).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402
import hostile  # noqa: E402

np = qstest.need("numpy")
qstest.need("safetensors")
from safetensors.numpy import load_file, save_file  # noqa: E402

tmp = qstest.tmpdir("qs-hostile-weights-")
model, calib = os.path.join(tmp, "model"), os.path.join(tmp, "calib.npy")
hostile.synth(model)
hostile.tokens(calib)
st = os.path.join(model, "model.safetensors")
t = load_file(st)
Q = "model.layers.0.self_attn.q_proj.weight"
t[Q][3, 5] = 3e38
save_file(t, st, metadata={"format": "pt"})

work, out = os.path.join(tmp, "work"), os.path.join(tmp, "out")
p = qstest.run(hostile.run_args(model, calib, work, out), expect=2)
errs = [x for x in p.stderr.splitlines() if x.startswith("qshard") and " error: " in x]  # (MPI_Abort adds its banner)
qstest.check(len(errs) == 1, f"expected one error line:\n{p.stderr}")
for w in (Q, "row 3", "scales", "fp16"):
    qstest.check(w in errs[0], f"'{w}' not in: {errs[0]}")
qstest.check(not os.path.exists(os.path.join(work, "blocks", "block_00000.h5")), "block 0's checkpoint was written")
qstest.check(not os.path.exists(os.path.join(out, "model.safetensors.index.json")), "an export was completed")
print(f"run: {errs[0]}")

# qshard layer on a matrix with a 1e6 (its scale, 2e6/15, is beyond fp16, fine in f32)
w = t[Q].astype(np.float32)
w[3, 5] = 1e6
wpath, xpath, hpath = os.path.join(tmp, "w.npy"), os.path.join(tmp, "x.npy"), os.path.join(tmp, "h.npy")
np.save(wpath, w)
np.save(xpath, np.random.default_rng(0).standard_normal((64, w.shape[1])).astype(np.float32))
for method, extra in (("rtn", []), ("gptq", ["--inputs", xpath])):
    p = qstest.run(["layer", "--weight", wpath, "--method", method, "--bits", 4, "--group-size", 32,
                    "--out", os.path.join(tmp, "q.npy")] + extra, expect=2)
    line = hostile.one_error_line(p, wpath, "row 3", "fp16")
    print(f"layer --method {method}: {line}")
p = qstest.run(["layer", "--weight", wpath, "--method", "rtn", "--bits", 4, "--group-size", 32, "--no-fp16-scales",
                "--out", os.path.join(tmp, "q.npy")])
print("layer --no-fp16-scales: f32 scales, exit 0")

# a loss that is not finite
w = np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32)
np.save(wpath, w)
np.save(hpath, np.full((64, 64), 3e38, dtype=np.float32))
p = qstest.run(["layer", "--weight", wpath, "--hessian", hpath, "--method", "rtn", "--bits", 4, "--group-size", 32,
                "--out", os.path.join(tmp, "q.npy")], expect=2)
line = hostile.one_error_line(p, wpath, "loss", "not finite")
print(f"layer with a non-finite loss: {line}")
print("ok")
