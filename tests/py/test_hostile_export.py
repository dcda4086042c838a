"""What goes into an export (issue 15, items 6 and 12).

Files copied into the GPTQ export (tokenizer_config.json and friends):
- a symlink into a Hugging Face cache-style blobs dir outside the model dir
  still works: the export holds the same JSON object (json.load equal);
- a symlink to a file that is not what its name claims (a "private key" as
  tokenizer_config.json, a binary merges.txt, a tokenizer.model that is not a
  protobuf, JSON with bytes after it, a file over 64 MiB) is refused at
  set-up: `qshard run` exits 2 naming the file before any block is computed,
  `qshard export` exits 2, and the secret is nowhere in the output dir
  (before: copied byte for byte).
Archive and GGUF:
- two identical runs give byte-identical qshard.h5 (before: times inside);
  the times are in WORK/qshard_report.json;
- `qshard export --format gguf` on a full disk (RLIMIT_FSIZE) fails with
  one line and leaves neither x.gguf nor x.gguf.partial.
"""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402
import hostile  # noqa: E402

qstest.need("numpy")
tmp = qstest.tmpdir("qs-hostile-export-")
model, calib = os.path.join(tmp, "model"), os.path.join(tmp, "calib.npy")
hostile.synth(model)
hostile.tokens(calib)

# ---- an HF-cache-style snapshot: side files are symlinks into ../blobs ------------------
blobs = os.path.join(tmp, "blobs")
os.makedirs(blobs)
TOKCFG = {"add_bos_token": True, "model_max_length": 2048, "tokenizer_class": "LlamaTokenizer",
          "added_tokens_decoder": {"0": {"content": "<unk>", "special": True}}, "pad": None, "note": "caf\u00e9 \u2603"}
blob = os.path.join(blobs, "3f2a")
with open(blob, "w") as f:
    json.dump(TOKCFG, f, indent=2, ensure_ascii=False)
os.symlink(os.path.relpath(blob, model), os.path.join(model, "tokenizer_config.json"))
with open(os.path.join(blobs, "9c1b"), "w") as f:
    f.write("#version: 0.2\n\u0120 t\nh e\n")
os.symlink(os.path.relpath(os.path.join(blobs, "9c1b"), model), os.path.join(model, "merges.txt"))
work, out = os.path.join(tmp, "work"), os.path.join(tmp, "out")
p = qstest.run(hostile.run_args(model, calib, work, out, "--formats", "gptq,hdf5"))
qstest.check(json.load(open(os.path.join(out, "tokenizer_config.json"))) == TOKCFG, "tokenizer_config.json content")
qstest.check(not os.path.islink(os.path.join(out, "tokenizer_config.json")), "the export holds a symlink")
qstest.check(open(os.path.join(out, "merges.txt")).read() == open(os.path.join(blobs, "9c1b")).read(), "merges.txt")
print("HF-cache symlinks: tokenizer_config.json and merges.txt copied as checked content")

# ---- identical runs, identical archives -----------------------------------------------
work2, out2 = os.path.join(tmp, "work2"), os.path.join(tmp, "out2")
qstest.run(hostile.run_args(model, calib, work2, out2, "--formats", "gptq,hdf5"))
a, b = open(os.path.join(out, "qshard.h5"), "rb").read(), open(os.path.join(out2, "qshard.h5"), "rb").read()
qstest.check(a == b, "two identical runs wrote different qshard.h5 bytes")
rep = json.load(open(os.path.join(work2, "qshard_report.json")))
qstest.check(all("seconds" in e for e in rep["layers"]) and "seconds" in rep, "the report lost the times")
print(f"identical runs: qshard.h5 byte-identical ({len(a)} bytes); times in the report")

# ---- side files that are not what they claim ---------------------------------------------
SECRET = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
secret = os.path.join(tmp, "id_ed25519")
open(secret, "wb").write(SECRET)
bad = {
    "tokenizer_config.json": (secret, "not valid JSON"),
    "special_tokens_map.json": (b'{"bos_token": "<s>"} trailing', "bytes after the JSON value"),
    "generation_config.json": (b'[1, 2, 3]', "expected a JSON object"),
    "merges.txt": (b"#version: 0.2\na b\n\x00\xff\xfe\n", "not UTF-8 text"),
    "tokenizer.model": (SECRET, "not a sentencepiece model"),
    "vocab.json": (None, "more than the"),  # a sparse file over 64 MiB
}
for name, (content, words) in bad.items():
    m = os.path.join(tmp, f"m-{name}")
    shutil.copytree(model, m, symlinks=True)
    dst = os.path.join(m, name)
    if os.path.lexists(dst):
        os.remove(dst)
    if isinstance(content, str):
        os.symlink(content, dst)
    elif content is None:
        with open(dst, "wb") as f:
            f.truncate((64 << 20) + 1)
    else:
        open(dst, "wb").write(content)
    w, o = os.path.join(tmp, f"w-{name}"), os.path.join(tmp, f"o-{name}")
    p = qstest.run(hostile.run_args(m, calib, w, o), expect=2)
    line = hostile.one_error_line(p, dst, words)
    qstest.check(not os.path.exists(os.path.join(w, "blocks", "block_00000.h5")), f"{name}: a block was computed")
    # the same files behind a finished work dir: `qshard export` refuses too
    rec = json.load(open(os.path.join(work, "fingerprint.json")))
    wx = os.path.join(tmp, f"wx-{name}")
    shutil.copytree(work, wx)
    rec["model"]["dir"] = m
    json.dump(rec, open(os.path.join(wx, "fingerprint.json"), "w"))
    p = qstest.run(["export", "--work", wx, "--format", "gptq", "--out", os.path.join(tmp, f"x-{name}")], expect=2)
    hostile.one_error_line(p, dst, words)
    for d in (o, os.path.join(tmp, f"x-{name}")):
        for base, _, files in os.walk(d):
            for f in files:
                qstest.check(b"PRIVATE KEY" not in open(os.path.join(base, f), "rb").read(), f"{f} holds the secret")
    print(f"{name}: {line}")

# ---- a full disk under `qshard export --format gguf`: nothing left behind ----------------
x = os.path.join(tmp, "x.gguf")


def small_files():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal, like ENOSPC
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, resource.RLIM_INFINITY))


p = subprocess.run([qstest.qshard(), "export", "--work", work, "--format", "gguf", "--out", x], capture_output=True,
                   text=True, preexec_fn=small_files)
qstest.check(p.returncode == 1, f"gguf on a full disk: exit {p.returncode}\n{p.stderr}")
line = hostile.one_error_line(p, "x.gguf")
qstest.check(not os.path.exists(x) and not os.path.exists(x + ".partial"), "a full disk left x.gguf(.partial)")
qstest.run(["export", "--work", work, "--format", "gguf", "--out", x])
print(f"gguf export on a full disk: {line}; nothing left behind; the retry writes it")
print("ok")
