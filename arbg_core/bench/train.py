"""Training throughput of the real training path (`arbg train`'s loop): tokens/s, model FLOP/s
and MFU per size preset, on the device at hand.

Each size trains on alanine-dipeptide MD frames (the shipped reference ensemble) with the
settings a run on this device gets by default (CUDA: frames resident on the GPU, bf16, compiled
step; CPU: the same loop, eager), the optimizer and frame given. Tokens/s is timed between two
progress reports after a warm-up window (compilation, allocator), so it is the steady state.
Model FLOPs per token = 6 x (matmul parameters: the blocks and the head) + 12 x layers x width x
tokens per frame (attention scores and values, forward and backward); MFU divides the achieved
model FLOP/s by a large matmul's FLOP/s measured in the same run (bf16 on CUDA, fp32 on CPU).
Usage: python -m arbg_core.bench.train [--out results] [--device cpu|cuda] [--sizes small,base]
"""

from __future__ import annotations

import tempfile
import time

import torch

from .common import cli, write

# frames per step by size: on CUDA ~0.5M tokens a step (compute-bound), on a CPU a few thousand
CUDA_BATCH = {"tiny": 8192, "small": 8192, "base": 8192, "large": 2048}
CPU_BATCH = {"tiny": 64, "small": 64, "base": 32, "large": 8}


def matmul_flops(device: torch.device, n: int | None = None, reps: int = 10) -> float:
    """FLOP/s of an n x n x n matmul: bf16 on CUDA, fp32 on CPU; the best of `reps`."""
    cuda = device.type == "cuda"
    n = n or (8192 if cuda else 1024)
    dtype = torch.bfloat16 if cuda else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for _ in range(reps + 1):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def flops_per_token(model, n_tokens: int) -> float:
    """6 x matmul parameters + 12 x layers x width x sequence length (attention)."""
    cfg = model.cfg
    matmul = sum(p.numel() for n, p in model.named_parameters()
                 if p.ndim == 2 and (".blocks." in f".{n}" or n.startswith("head")))
    return 6 * matmul + 12 * cfg.n_layers * cfg.d_model * n_tokens


def one_size(data, size: str, device: torch.device, batch: int, steps: int, optimizer: str,
             frame: str, n_bins: int | None) -> dict:
    from arbg_core.frames import get_frame
    from arbg_core.model import ArBG, ModelConfig
    from arbg_core.train import TrainConfig, train

    marks: dict[int, float] = {}

    def progress(done, total, info):
        if device.type == "cuda":
            torch.cuda.synchronize()
        marks[done] = time.perf_counter()

    cfg = TrainConfig(size=size, n_bins=n_bins, steps=3 * steps, batch_size=batch,
                      val_every=10 ** 9, save_every=10 ** 9, log_every=steps, val_frames=64,
                      optimizer=optimizer, lr=1e-3, frame=frame, warmup_steps=1)
    with tempfile.TemporaryDirectory() as out:
        summary = train(data, out, cfg, device=str(device), progress=progress)
    seconds = marks[2 * steps] - marks[steps]  # the middle window: warmed up, no final save
    model = ArBG(ModelConfig.preset(size, n_bins=n_bins))
    n_tokens = len(get_frame(frame).tokens(data.features)[0])
    tokens_per_s = batch * n_tokens * steps / seconds
    return {"size": size, "params": model.num_params(), "n_bins": model.cfg.n_bins,
            "frames_per_step": batch, "tokens_per_step": batch * n_tokens,
            "tokens_per_s": tokens_per_s,
            "model_flops_per_s": tokens_per_s * flops_per_token(model, n_tokens),
            "bf16": summary["bf16"], "resident": summary["resident"],
            "compiled": device.type == "cuda", "step_s": seconds / steps}


def run(out_dir: str = "results", device: str = "auto", sizes: str = "",
        optimizer: str = "muon", frame: str = "body", n_bins: int = 4096,
        steps: int = 0) -> dict:
    from arbg_core.data import FrameData

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                       else "cpu" if device == "auto" else device)
    cuda = dev.type == "cuda"
    names = [s for s in sizes.split(",") if s] or (["small", "base", "large"] if cuda
                                                   else ["tiny", "small"])
    steps = steps or (20 if cuda else 2)
    ref = FrameData.load("assets/reference/ala2.npz")  # real MD frames as training data
    data = FrameData(ref.xyz_test, ref.xyz_test[:64], ref.xyz_test[:0], ref.features,
                     ref.topology_pdb, {"system": ref.meta["system"]})
    peak = matmul_flops(dev)
    rows = []
    for size in names:
        batch = (CUDA_BATCH if cuda else CPU_BATCH)[size]
        row = one_size(data, size, dev, batch, steps, optimizer, frame,
                       n_bins if size != "tiny" else None)
        row["mfu"] = row["model_flops_per_s"] / peak
        rows.append(row)
        print(f"train {size} on {dev}: {row['tokens_per_s']:,.0f} tokens/s, "
              f"{row['model_flops_per_s'] / 1e12:.2f} TFLOP/s, mfu {row['mfu']:.3f}")
    result = {"device": str(dev), "matmul_flops_per_s": peak, "optimizer": optimizer,
              "frame": frame, "system": "alanine dipeptide (capped A), 22 atoms", "sizes": rows}
    write(out_dir, f"train_{dev.type}", result)
    return result


if __name__ == "__main__":
    cli(run, __doc__, show=lambda result: None)  # run prints a line per size
