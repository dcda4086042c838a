"""`qshard layer` end to end: .npy files made with NumPy in, outputs checked
with NumPy: the dequantization identity Q = scales[g_idx] * (codes - zeros),
the printed loss tr((W-Q) H (W-Q)^T), RTN against a NumPy re-implementation
of the reference grid (quant.py), GPTQ against a NumPy port of the
reference's fasterquant (float64, written here), and the error cases."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qstest  # noqa: E402

np = qstest.need("numpy")


# ---- the reference grid and GPTQ, in NumPy ------------------------------------

def find_params(x, maxq, sym, fp16):
    """quant.py Quantizer.find_params(weight=True, perchannel=True), float32."""
    x = x.astype(np.float32)
    zero32 = np.zeros(x.shape[0], np.float32)
    xmin = np.minimum(x.min(1), zero32)
    xmax = np.maximum(x.max(1), zero32)
    if sym:
        xmax = np.maximum(np.abs(xmin), xmax)
        xmin = np.where(xmin < 0, -xmax, xmin)
    t = (xmin == 0) & (xmax == 0)
    xmin[t] = -1
    xmax[t] = 1
    scale = ((xmax - xmin) / np.float32(maxq)).astype(np.float32)
    if sym:
        zero = np.full_like(scale, (maxq + 1) // 2)
    else:
        zero = np.round(-xmin / scale).astype(np.float32)
    if fp16:
        scale = scale.astype(np.float16).astype(np.float32)
    return scale, zero


def quant_codes(x, scale, zero, maxq):
    return np.clip(np.round(x.astype(np.float32) / scale) + zero, 0, maxq)


def rtn(W, bits, gs, sym, fp16=True):
    maxq = 2 ** bits - 1
    n = W.shape[1]
    g = n if gs == -1 else gs
    codes = np.zeros(W.shape, np.int64)
    for c in range(0, n, g):
        s, z = find_params(W[:, c:c + g], maxq, sym, fp16)
        codes[:, c:c + g] = quant_codes(W[:, c:c + g], s[:, None], z[:, None], maxq)
    return codes


def gptq(W, H, bits, gs, sym, act_order, static, fp16=True, block=128, damp=0.01):
    """The reference's fasterquant in float64 (grid in float32); returns
    (codes, g_idx, dequantized Q), in the original column order."""
    maxq = 2 ** bits - 1
    W = W.astype(np.float64).copy()
    H = H.astype(np.float64).copy()
    n = W.shape[1]
    s, z = find_params(W, maxq, sym, fp16)
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    groups = []
    if static and gs != -1:
        groups = [find_params(W[:, i:i + gs], maxq, sym, fp16) for i in range(0, n, gs)]
    perm = np.arange(n)
    if act_order:
        perm = np.argsort(-np.diag(H), kind="stable")
        W = W[:, perm]
        H = H[perm][:, perm]
    H[np.arange(n), np.arange(n)] += damp * np.mean(np.diag(H))
    L = np.linalg.cholesky(H)
    Li = np.linalg.inv(L)
    U = np.linalg.cholesky(Li.T @ Li).T
    codes = np.zeros(W.shape, np.int64)
    Q = np.zeros(W.shape)
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        W1 = W[:, i1:i2].copy()
        E = np.zeros_like(W1)
        for i in range(i2 - i1):
            c = i1 + i
            if gs != -1:
                if not static:
                    if c % gs == 0:
                        s, z = find_params(W[:, c:c + gs], maxq, sym, fp16)
                else:
                    s, z = groups[perm[c] // gs]
            w = W1[:, i]
            q = quant_codes(w, s, z, maxq)
            codes[:, c] = q
            Q[:, c] = s.astype(np.float64) * (q - z)
            e = (w - Q[:, c]) / U[c, c]
            W1[:, i:] -= np.outer(e, U[c, c:i2])
            E[:, i] = e
        W[:, i2:] -= E @ U[i1:i2, i2:]
    out = np.zeros_like(codes)
    out[:, perm] = codes
    Qo = np.zeros_like(Q)
    Qo[:, perm] = Q
    g = n if gs == -1 else gs
    gi = np.zeros(n, np.int64)
    if gs != -1:
        gi[perm] = np.arange(n) // g
        if static:
            gi = np.arange(n) // g
    return out, gi, Qo


def hloss(W, Q, H):
    D = W.astype(np.float64) - Q.astype(np.float64)
    return float(np.einsum("ij,jk,ik->", D, H.astype(np.float64), D))


# ---- fixtures ---------------------------------------------------------------------

def main():
    rng = np.random.default_rng(1234)
    d = qstest.tmpdir("qs-layer-")
    p = lambda name: os.path.join(d, name)  # noqa: E731
    rows, n = 48, 256
    fs = np.exp(rng.uniform(-1, 1, n))
    fs[5::37] *= 20
    X = ((rng.standard_normal((1500, 16)) @ rng.standard_normal((16, n))
          + 0.5 * rng.standard_normal((1500, n))) * fs).astype(np.float32)
    X[:, 77] = 0  # a dead input feature
    H = (2.0 / X.shape[0] * (X.astype(np.float64).T @ X.astype(np.float64))).astype(np.float32)
    W = (0.02 * rng.standard_normal((rows, n))).astype(np.float32)
    W[3] = np.abs(W[3])
    np.save(p("X.npy"), X)
    np.save(p("H.npy"), H)
    np.save(p("W.npy"), W)
    np.save(p("W16.npy"), W.astype(np.float16))

    def run_layer(extra, weight="W.npy", src=("--hessian", "H.npy")):
        args = ["layer", "--weight", p(weight), src[0], p(src[1]), "--out", p("Q.npy"),
                "--codes", p("C.npy"), "--scales", p("S.npy"), "--zeros", p("Z.npy"),
                "--g-idx", p("I.npy"), "--json"] + extra
        r = qstest.run(args)
        j = json.loads(r.stdout)
        return j, np.load(p("Q.npy")), np.load(p("C.npy")), np.load(p("S.npy")), np.load(p("Z.npy")), np.load(p("I.npy"))

    def check_layout(j, Q, C, S, Z, I, bits, gs, label):
        maxq = 2 ** bits - 1
        groups = 1 if gs == -1 else n // gs
        qstest.check(Q.dtype == np.float32 and Q.shape == (rows, n), f"{label}: Q {Q.dtype} {Q.shape}")
        qstest.check(C.dtype == np.int32 and C.shape == (rows, n), f"{label}: codes {C.dtype} {C.shape}")
        qstest.check(S.shape == (groups, rows) and Z.shape == (groups, rows), f"{label}: scales {S.shape}")
        qstest.check(I.dtype == np.int32 and I.shape == (n,), f"{label}: g_idx {I.shape}")
        qstest.check(C.min() >= 0 and C.max() <= maxq, f"{label}: codes outside [0, {maxq}]")
        qstest.check(Z.min() >= 0 and Z.max() <= maxq, f"{label}: zeros outside [0, {maxq}]")
        qstest.check(I.min() >= 0 and I.max() < groups, f"{label}: g_idx out of range")
        qstest.check(np.all(np.bincount(I, minlength=groups) == n // groups), f"{label}: uneven groups")
        # the export's dequantization, in float32, reproduces Q bit for bit
        deq = S[I, :].T * (C.astype(np.float32) - Z[I, :].T.astype(np.float32))
        qstest.check(np.array_equal(deq.astype(np.float32), Q), f"{label}: scales*(codes-zeros) != Q")
        qstest.check(np.array_equal(S.astype(np.float16).astype(np.float32), S), f"{label}: scales not fp16-exact")
        want = hloss(W, Q, H)
        qstest.check(abs(j["loss"] - want) <= 1e-3 * want, f"{label}: printed loss {j['loss']} != {want}")
        qstest.check(j["seconds"] >= 0, f"{label}: seconds")

    # RTN against the NumPy grid: exact
    for bits in (2, 3, 4, 8):
        for sym in (True, False):
            for gs in (32, 128, -1):
                label = f"rtn {bits}b {'sym' if sym else 'asym'} g{gs}"
                j, Q, C, S, Z, I = run_layer(["--method", "rtn", "--bits", str(bits), "--group-size", str(gs),
                                              "--sym" if sym else "--asym"])
                check_layout(j, Q, C, S, Z, I, bits, gs, label)
                want = rtn(W, bits, gs, sym)
                qstest.check(np.array_equal(C, want), f"{label}: {np.sum(C != want)} codes differ from NumPy")

    # GPTQ against the NumPy port of the reference
    cases = [(4, True, 128, False, False), (4, False, 64, True, False), (3, True, 32, True, True),
             (2, False, -1, True, False), (8, True, 128, False, True), (4, True, 64, True, True)]
    for bits, sym, gs, act, static in cases:
        label = f"gptq {bits}b {'sym' if sym else 'asym'} g{gs}{' act' if act else ''}{' static' if static else ''}"
        extra = ["--bits", str(bits), "--group-size", str(gs), "--sym" if sym else "--asym"]
        extra += ["--act-order"] if act else []
        extra += ["--static-groups"] if static else []
        j, Q, C, S, Z, I = run_layer(extra + ["--factor-f64"])
        check_layout(j, Q, C, S, Z, I, bits, gs, label)
        qstest.check(j["loss"] <= j["rtn_loss"], f"{label}: GPTQ loss {j['loss']} > RTN {j['rtn_loss']}")
        qstest.check(j["dead_columns"] == 1, f"{label}: dead columns {j['dead_columns']}")
        qstest.check(np.all(Q[:, 77] == 0), f"{label}: the dead column is not zero")
        want, want_g, want_q = gptq(W, H, bits, gs, sym, act, static)
        qstest.check(np.array_equal(I, want_g), f"{label}: g_idx differs from the reference's")
        # float32 vs float64: codes differ only after a rounding tie, which then
        # propagates along its row; a few rows at most
        bad_rows = int(np.sum(np.any(C != want, axis=1)))
        print(f"{label}: {bad_rows} of {rows} rows differ from the NumPy port (ties), loss {j['loss']:.4g} vs rtn {j['rtn_loss']:.4g}")
        qstest.check(bad_rows <= rows // 8, f"{label}: {bad_rows} of {rows} rows differ from the NumPy reference")
        ref_loss = hloss(W, want_q, H)
        qstest.check(abs(ref_loss - j["loss"]) <= 0.02 * ref_loss, f"{label}: loss {j['loss']} vs NumPy {ref_loss}")

    # --inputs X accumulates the same H (f32 syrk vs float64 NumPy: close)
    jh, Qh, *_ = run_layer(["--act-order"])
    jx, Qx, *_ = run_layer(["--act-order"], src=("--inputs", "X.npy"))
    qstest.check(jx["samples"] == X.shape[0], "samples")
    qstest.check(abs(jx["loss"] - jh["loss"]) <= 0.02 * jh["loss"], f"--inputs loss {jx['loss']} vs {jh['loss']}")
    qstest.check(np.mean(Qh == Qx) > 0.9, "--inputs gives a different Q")
    # float16 weights are accepted (and are the same numbers)
    j16, Q16, *_ = run_layer(["--method", "rtn"], weight="W16.npy")
    qstest.check(Q16.shape == (rows, n), "f16 weight")

    # plain output names the loss and the time
    r = qstest.run(["layer", "--weight", p("W.npy"), "--hessian", p("H.npy"), "--out", p("Q.npy")])
    qstest.check("loss" in r.stdout and "seconds" in r.stdout, f"text output: {r.stdout}")

    # errors: one line, exit 2
    bad = rng.standard_normal((n, n)).astype(np.float32)
    np.save(p("Hasym.npy"), bad)
    np.save(p("Hrect.npy"), H[:, :128])
    np.save(p("Hsmall.npy"), H[:128, :128])
    Hn = H.copy()
    Hn[3, 3] = np.nan
    np.save(p("Hnan.npy"), Hn)
    Wn = W.copy()
    Wn[2, 5] = np.nan
    np.save(p("Wnan.npy"), Wn)
    np.save(p("W3d.npy"), W.reshape(2, rows // 2, n))
    base = ["layer", "--out", p("E.npy")]
    errors = [
        (["--weight", p("W.npy"), "--hessian", p("Hsmall.npy")], "does not match"),
        (["--weight", p("W.npy"), "--hessian", p("Hrect.npy")], "square"),
        (["--weight", p("W.npy"), "--hessian", p("Hasym.npy")], "not symmetric"),
        (["--weight", p("W.npy"), "--hessian", p("Hnan.npy")], "finite"),
        (["--weight", p("Wnan.npy"), "--hessian", p("H.npy")], "finite"),
        (["--weight", p("W3d.npy"), "--hessian", p("H.npy")], "2-D"),
        (["--weight", p("W.npy"), "--hessian", p("H.npy"), "--bits", "5"], "5 bits"),
        (["--weight", p("W.npy"), "--hessian", p("H.npy"), "--group-size", "96"], "group size 96"),
        (["--weight", p("W.npy"), "--hessian", p("H.npy"), "--group-size", "0"], "group size 0"),
        (["--weight", p("W.npy"), "--hessian", p("H.npy"), "--method", "awq"], "rtn or gptq"),
        (["--weight", p("W.npy"), "--inputs", p("Hsmall.npy")], "inputs"),
        (["--weight", p("W.npy")], "needs --hessian"),
        (["--weight", p("missing.npy"), "--hessian", p("H.npy")], "missing.npy"),
        (["--weight", p("W.npy"), "--hessian", p("H.npy"), "--damp", "2"], "damp"),
    ]
    for args, needle in errors:
        r = qstest.run(base + args, expect=2)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        qstest.check(len(lines) == 1, f"{args}: expected one error line, got {r.stderr!r}")
        qstest.check(lines[0].startswith("qshard layer: error:"), f"{args}: {lines[0]}")
        qstest.check(needle in lines[0], f"{args}: '{needle}' not in {lines[0]!r}")
        qstest.check(not os.path.exists(p("E.npy")), f"{args}: wrote an output despite the error")
    r = qstest.run(["layer", "--weight", p("W.npy"), "--hessian", p("H.npy")], expect=2)
    qstest.check("--out" in r.stderr, "missing --out")
    print("ok")


if __name__ == "__main__":
    main()
