"""bench/gptqmodel_job.py — bench/e2e.sh's job on GPTQModel, for the side by side.

Runs in the peers' virtual environment (QS_PEERS_VENV: torch, transformers,
gptqmodel), never in CI. Quantizes MODEL_DIR with GPTQ on the CPU with the
same settings as the qshard run it is compared with — bits, group size,
symmetric grid, damping, no act-order (desc_act=False, act_group_aware=False),
true-sequential — and the same calibration token ids (a .npy [rows, L]),
then saves the export to OUT. GPTQModel picks its own compute dtype (bf16
on a CPU that has it). The caller times the whole process, from start to the
saved export, as it times qshard.

usage: python gptqmodel_job.py MODEL_DIR CALIB.npy OUT [--bits 4] [--group-size 128]
       [--damp 0.01] [--batch-size 1] [--threads N]
"""
import argparse
import os
import sys
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("calib")
    ap.add_argument("out")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--damp", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    a = ap.parse_args()

    import torch
    torch.set_num_threads(a.threads)
    from gptqmodel import GPTQModel, QuantizeConfig

    t0 = time.time()
    qc = QuantizeConfig(bits=a.bits, group_size=a.group_size, sym=True, desc_act=False, act_group_aware=False,
                        true_sequential=True, damp_percent=a.damp)
    model = GPTQModel.load(a.model, qc)
    ids = np.load(a.calib)
    calibration = [{"input_ids": row.astype(np.int64).tolist(), "attention_mask": [1] * len(row)} for row in ids]
    model.quantize(calibration, batch_size=a.batch_size)
    model.save(a.out)
    print(f"gptqmodel_job: {ids.shape[0]}x{ids.shape[1]} tokens, dtype {model.model.dtype}, "
          f"{time.time() - t0:.1f} s after imports", file=sys.stderr)


if __name__ == "__main__":
    main()
