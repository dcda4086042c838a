"""Shared helpers for qshard's Python tests (test-only code).

Tests are plain scripts run by ctest: exit 0 pass, 1 fail, 77 skip.
Environment (set by tests/CMakeLists.txt): QSHARD (the binary), QS_SHARED
(../shared), QS_SOURCE_DIR, QS_BUILD_DIR, QS_MPIEXEC.
"""
import os
import subprocess
import sys
import tempfile

SKIP = 77


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(SKIP)


def need(*modules):
    """Import test-only modules or skip the test when one is missing."""
    mods = []
    for name in modules:
        try:
            mods.append(__import__(name))
        except ImportError:
            skip(f"python module {name} is not installed (scripts/install_deps.sh puts it in .venv)")
    return mods[0] if len(mods) == 1 else mods


def qshard():
    return os.environ.get("QSHARD") or os.path.join(os.environ.get("QS_BUILD_DIR", "build"), "qshard")


def shared(*parts):
    base = os.environ.get("QS_SHARED") or os.path.join(os.environ.get("QS_SOURCE_DIR", "."), "..", "shared")
    path = os.path.join(base, *parts)
    if not os.path.exists(path):
        skip(f"{path} is missing (the shared models and text live in ../shared)")
    return path


def source(*parts):
    return os.path.join(os.environ.get("QS_SOURCE_DIR", "."), *parts)


def run(args, expect=0, **kw):
    """Runs qshard with args; checks the exit code; returns CompletedProcess."""
    cmd = [qshard()] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if expect is not None and p.returncode != expect:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}, expected {expect}\n"
                             f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def mpirun(np_, args, expect=0, **kw):
    mpiexec = os.environ.get("QS_MPIEXEC", "mpirun")
    cmd = [mpiexec, "-np", str(np_), "--oversubscribe", qshard()] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if expect is not None and p.returncode != expect:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}, expected {expect}\n"
                             f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def tmpdir(prefix="qs-test-"):
    return tempfile.mkdtemp(prefix=prefix)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def story_rows(tokenizer_json, text_path, start_par, n_rows, seq):
    """[n_rows, seq] int32 rows as TinyStories models were trained: BOS (id 1) + a
    paragraph's ids from HF `tokenizers`, cut to seq; shorter paragraphs are
    skipped, so no row starts mid-story (the seams measure the model's
    confusion more than quantization)."""
    import numpy as np
    import tokenizers
    tok = tokenizers.Tokenizer.from_file(tokenizer_json)
    pars = [p.strip() for p in open(text_path, encoding="utf-8").read().split("\n\n") if p.strip()]
    rows = []
    for p in pars[start_par:]:
        ids = [1] + tok.encode(p, add_special_tokens=False).ids
        if len(ids) >= seq:
            rows.append(ids[:seq])
        if len(rows) == n_rows:
            break
    return np.array(rows, dtype=np.int32)
