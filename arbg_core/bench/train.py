"""Training throughput: tokens/s of teacher-forced training steps, fp32 against bf16 autocast.

`small` preset (random init), AdamW, batches of random tokens of a capped peptide (default
tri-alanine: 42 atoms, 126 tokens). fp32 and bf16 steps alternate in one run, so their ratio holds
on a noisy machine. On CPUs with bf16 matrix units (AMX) `arbg train` picks bf16 by itself
(`--bf16 auto`); the JSON records whether this machine qualifies.
Usage: python -m arbg_core.bench.train [--out results] [--device cpu|cuda] [--batch 256] [--sequence AAA]
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .common import cli, write


def run(out_dir: str = "results", device: str = "cpu", batch: int = 256, sequence: str = "AAA",
        size: str = "small", steps: int = 4, rounds: int = 3) -> dict:
    from arbg_core.model import ArBG, ModelConfig, conditioning, train_loss
    from arbg_core.peptide import build
    from arbg_core.train import cpu_bf16_is_faster

    dev = torch.device(device)
    torch.manual_seed(0)
    model = ArBG(ModelConfig.preset(size)).to(dev).train()
    pep = build(sequence, "capped")
    cond = conditioning([pep.features]).to(dev)
    n_tokens = 3 * pep.n_atoms
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    g = torch.Generator().manual_seed(0)
    bins = torch.randint(0, model.cfg.n_bins, (batch, n_tokens), generator=g).to(dev)

    def step(bf16: bool):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = train_loss(model, bins, cond)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    times = {False: [], True: []}
    for bf16 in (False, True):
        step(bf16)  # warm-up
    for _ in range(rounds):
        for bf16 in (False, True):
            t0 = time.perf_counter()
            for _ in range(steps):
                step(bf16)
            times[bf16].append((time.perf_counter() - t0) / steps)
    tps = {k: batch * n_tokens / float(np.median(v)) for k, v in times.items()}
    result = {"system": f"{pep.name}, {pep.n_atoms} atoms, {n_tokens} tokens", "size": size,
              "params": model.num_params(), "batch": batch, "device": str(dev),
              "tokens_per_s_fp32": tps[False], "tokens_per_s_bf16": tps[True],
              "bf16_speedup": tps[True] / tps[False],
              "auto_picks_bf16": bool(cpu_bf16_is_faster()) if dev.type == "cpu" else dev.type == "cuda"}
    print(f"train {size} on {dev}: fp32 {tps[False]:,.0f} tokens/s, bf16 {tps[True]:,.0f} tokens/s "
          f"({result['bf16_speedup']:.2f}x)")
    write(out_dir, f"train_{dev.type}", result)
    return result


if __name__ == "__main__":
    cli(run, __doc__, show=lambda result: None)  # run prints its line
