"""Shared helpers for the peer checks (tests/peers/, ctest label `peers`).

The peers are the real loaders — GPTQModel, transformers + optimum, llama.cpp
through llama-cpp-python — installed by scripts/install_peers.sh in a side
virtual environment ($QS_PEERS_VENV, default .peers/venv in the repository).
A peer script imports this module first: when it runs under another Python it
re-executes itself with the venv's, and it skips (exit 77, with the reason)
when the venv or the stage it needs is missing.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("QS_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SOURCE, "tests", "py"))
import qstest  # noqa: E402

VENV = os.environ.get("QS_PEERS_VENV") or os.path.join(SOURCE, ".peers", "venv")
STAGES = {"gptq": ".ready", "llama": ".ready-llama"}
LAST_RUN = None  # the CompletedProcess of the last quantize_tinystories


def enter(stage):
    """Runs the calling script under the peers venv's Python (stage "gptq" or
    "llama" must be installed), or skips with the reason."""
    marker = os.path.join(VENV, STAGES[stage])
    if not os.path.exists(marker):
        qstest.skip(f"{marker} is missing: the peer loaders are not installed "
                    f"(QS_PEERS_VENV={VENV} scripts/install_peers.sh)")
    py = os.path.join(VENV, "bin", "python3")
    if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
        env = dict(os.environ, QS_SOURCE_DIR=SOURCE)
        sys.stdout.flush()
        os.execve(py, [py, os.path.abspath(sys.argv[0])] + sys.argv[1:], env)


def versions(*names):
    from importlib.metadata import version
    return ", ".join(f"{n} {version(n)}" for n in names)


def token_rows(tokenizer_json, text_path, start_par, n_rows, seq):
    """BOS + paragraph rows (qstest.story_rows)."""
    return qstest.story_rows(tokenizer_json, text_path, start_par, n_rows, seq)


def qshard_eval(model_dir, tokens_npy):
    import json
    p = qstest.run(["eval", "--model", model_dir, "--tokens", tokens_npy, "--json"])
    return json.loads(p.stdout.strip().splitlines()[-1])["nll"]


def quantize_tinystories(tmp, formats):
    """qshard run on tinystories-656K with 2 MPI ranks (GPTQ 4-bit, g32, sym:
    what GGUF Q4_0 holds exactly) → (out dir, eval tokens .npy)."""
    import numpy as np
    model = qstest.shared("models", "tinystories-656K")
    text = qstest.shared("text", "tinystories_valid_head.txt")
    tj = os.path.join(model, "tokenizer.json")
    calib, evalt = os.path.join(tmp, "calib.npy"), os.path.join(tmp, "eval.npy")
    np.save(calib, token_rows(tj, text, 0, 32, 128))
    np.save(evalt, token_rows(tj, text, 400, 8, 128))
    out = os.path.join(tmp, "out")
    global LAST_RUN
    LAST_RUN = qstest.mpirun(2, ["run", "--model", model, "--calib", calib, "--work", os.path.join(tmp, "work"),
                      "--out", out, "--bits", 4, "--group-size", 32, "--sym", "--formats", formats])
    return model, out, evalt


def mean_nll(logits, tokens):
    """Mean NLL over positions 1..L-1 (as `qshard eval`), in float64."""
    import numpy as np
    lg = np.asarray(logits, dtype=np.float64)[:, :-1]
    m = lg.max(-1, keepdims=True)
    lse = (m[..., 0] + np.log(np.exp(lg - m).sum(-1)))
    tgt = np.take_along_axis(lg, tokens[:, 1:, None].astype(np.int64), -1)[..., 0]
    return float((lse - tgt).mean())


def run_py(code, **kw):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, **kw)
