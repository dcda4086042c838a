"""qshard's GPTQ export of tinystories-656K loaded by the real loaders:
GPTQModel and transformers + optimum (both on CPU), against `qshard eval`.

- qshard run (2 MPI ranks, GPTQ 4-bit g32 sym) writes the export; 8 rows ×
  128 tokens of the shared TinyStories text (ids from HF `tokenizers`) are
  scored by `qshard eval` and by each loader.
- Each loader unpacks the export with its own code (GPTQModel's
  dequantize_weight of its kernel modules); a float32 forward of the HF llama
  with those weights must give qshard's NLL within 1e-6. The loaders' CPU
  kernels run in bfloat16 (GPTQModel casts float32 input to bfloat16), so
  their native NLL is also printed and must be within 2e-3.
- Unquantized tensors (embedding, norms) keep the checkpoint's dtype.
Needs scripts/install_peers.sh (stage 1); skips otherwise.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402

peers.enter("gptq")
import numpy as np  # noqa: E402
import torch  # noqa: E402

check = peers.qstest.check
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


def f32_forward_nll(model, tokens):
    """Replaces every quantized module by a float32 nn.Linear holding the
    loader's own dequantized weight, runs the model in float32, and returns
    (NLL, number of modules replaced)."""
    n = 0
    for name, mod in list(model.named_modules()):
        if not hasattr(mod, "qweight") or not hasattr(mod, "dequantize_weight"):
            continue
        # the loader unpacks qweight/qzeros/g_idx; its arithmetic is in the
        # scales' dtype (transformers keeps the file's float16), so in float32
        mod.scales = mod.scales.to(torch.float32)
        w = mod.dequantize_weight().to(torch.float32).T.contiguous()  # [out, in]
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=mod.bias is not None)
        lin.weight = torch.nn.Parameter(w, requires_grad=False)
        if mod.bias is not None:
            lin.bias = torch.nn.Parameter(mod.bias.detach().to(torch.float32), requires_grad=False)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, lin)
        n += 1
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and v.dtype != torch.float32]
    check(not bad, f"float32 forward: {bad[:3]} are not float32")
    return native_nll(model, tokens), n


def native_nll(model, tokens):
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(tokens.astype(np.int64))).logits
    return peers.mean_nll(logits.to(torch.float64).numpy(), tokens)


def main():
    tmp = peers.qstest.tmpdir("qs-peer-gptq-")
    model_dir, out, evalt = peers.quantize_tinystories(tmp, "gptq")
    tokens = np.load(evalt)
    ref = peers.qshard_eval(out, evalt)
    print(f"qshard eval: NLL {ref:.7f} on {tokens.shape[0]}x{tokens.shape[1]} tokens")
    print(peers.versions("torch", "transformers", "optimum", "gptqmodel"))
    n_linears = 7 * 2  # q k v o gate up down × 2 layers

    from gptqmodel import GPTQModel
    # dequantize before any forward: the kernels repack their buffers on first use
    f32, n = f32_forward_nll(GPTQModel.load(out, device="cpu", dtype=torch.float32).model, tokens)
    native = native_nll(GPTQModel.load(out, device="cpu", dtype=torch.float32).model, tokens)
    print(f"GPTQModel: native kernels NLL {native:.7f} (diff {native - ref:+.2e}); "
          f"own dequantization + f32 forward NLL {f32:.7f} (diff {f32 - ref:+.2e}); {n} quantized linears")
    check(n == n_linears, f"GPTQModel loaded {n} quantized linears, expected {n_linears}")
    check(abs(f32 - ref) < 1e-6, f"GPTQModel NLL {f32} vs qshard {ref}")
    check(abs(native - ref) < 2e-3, f"GPTQModel native NLL {native} vs qshard {ref}")

    from transformers import AutoModelForCausalLM, GPTQConfig

    def load(backend=None):
        kw = {"quantization_config": GPTQConfig(bits=4, backend=backend)} if backend else {}
        return AutoModelForCausalLM.from_pretrained(out, device_map="cpu", dtype=torch.float32, **kw)
    # the default CPU kernel (TorchCpuAvx512Linear) keeps bfloat16 scales once
    # loaded, so its dequantize_weight is not the file's; TorchLinear's is
    # (backend gptq_torch)
    hf = load("gptq_torch")
    f32_kinds = sorted({type(m).__name__ for m in hf.modules() if hasattr(m, "qweight")})
    f32, n = f32_forward_nll(hf, tokens)
    hf = load()
    kinds = sorted({type(m).__name__ for m in hf.modules() if hasattr(m, "qweight")})
    native = native_nll(hf, tokens)
    print(f"transformers+optimum: native kernels ({', '.join(kinds)}) NLL {native:.7f} (diff {native - ref:+.2e}); "
          f"{', '.join(f32_kinds)}'s dequantization + f32 forward NLL {f32:.7f} (diff {f32 - ref:+.2e}); "
          f"{n} quantized linears")
    check(n == n_linears, f"transformers loaded {n} quantized linears, expected {n_linears}")
    check(abs(f32 - ref) < 1e-6, f"transformers NLL {f32} vs qshard {ref}")
    check(abs(native - ref) < 2e-3, f"transformers native NLL {native} vs qshard {ref}")

    # the unquantized tensors keep the checkpoint's dtype in the export
    from safetensors import safe_open
    import json
    idx = json.load(open(os.path.join(out, "model.safetensors.index.json")))["weight_map"]
    name = "model.embed_tokens.weight"
    with safe_open(os.path.join(out, idx[name]), "pt") as f:
        dt = f.get_slice(name).get_dtype()
    want = json.load(open(os.path.join(model_dir, "config.json")))["torch_dtype"]
    check({"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[dt] == want, f"{name} is {dt}, checkpoint {want}")
    print("ok")


if __name__ == "__main__":
    main()
