"""Sampling throughput: KV cache vs re-encoding the prefix, and achieved model FLOP/s.

Alanine-dipeptide size (22 atoms, 66 tokens), `small` preset (random weights: the speed of a
forward pass does not depend on training), batch 1024 by default. Both ratios are measured side
by side in one run, so they hold on a noisy machine:
  - speedup = samples/s with cache / samples/s without;
  - mfu = model FLOP/s while sampling with the cache / FLOP/s of a large fp32 matmul.
Usage: python -m arbg_core.bench.sampling [--out results] [--batch 1024] [--device cpu|cuda]
"""

from __future__ import annotations

import time

import torch

from .common import cli, write


def model_flops_per_sample(cfg, n_tokens: int) -> float:
    """Forward FLOPs to generate one sample with the cache: matmuls + attention over the prefix."""
    d, L, V = cfg.d_model, cfg.n_layers, cfg.n_bins
    per_token = L * (2 * 4 * d * d + 2 * 3 * d * cfg.mlp_hidden) + 2 * d * V
    attention = sum(L * 4 * d * (t + 1) for t in range(n_tokens))
    return n_tokens * per_token + attention


def matmul_flops_per_s(device, n=2048, repeats=10, dtype=torch.float32) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    (a @ b).sum().item()
    t0 = time.perf_counter()
    for _ in range(repeats):
        c = a @ b
    c.sum().item()
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0)


def run(out_dir: str = "results", batch: int = 1024, device: str = "cpu",
        n_uncached: int | None = None, size: str = "small") -> dict:
    from arbg_core import peptide
    from arbg_core.model import ArBG, ModelConfig
    from arbg_core.sampling import sample
    from arbg_core.tokenizer import Tokenizer, TokenizerConfig

    dev = torch.device(device)
    pep = peptide.build("A", "capped")
    cfg = ModelConfig.preset(size)
    torch.manual_seed(0)
    model = ArBG(cfg).to(dev).eval()
    tok = Tokenizer(TokenizerConfig(n_bins=cfg.n_bins, std=0.2))
    T = 3 * pep.n_atoms
    sample(model, tok, pep.features, 8, batch_size=8, device=dev)  # warm-up

    def timed(n, cache):
        t0 = time.perf_counter()
        sample(model, tok, pep.features, n, batch_size=min(batch, n), device=dev, use_kv_cache=cache)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)

    cached = timed(batch, True)
    n_unc = n_uncached or batch
    uncached = timed(n_unc, False)
    mm = matmul_flops_per_s(dev)
    flops = model_flops_per_sample(cfg, T) * cached
    result = {"system": "ACE-ALA-NME, 22 atoms, 66 tokens", "size": size,
              "params": model.num_params(), "batch": batch, "device": str(dev),
              "samples_per_s_cached": cached, "samples_per_s_uncached": uncached,
              "uncached_batch": n_unc, "kv_cache_speedup": cached / uncached,
              "model_flops_per_s": flops, "matmul_flops_per_s": mm, "mfu_vs_matmul": flops / mm,
              "goals": {"kv_cache_speedup": ">= 10", "mfu_vs_matmul": ">= 0.30"}}
    write(out_dir, f"sampling_{dev.type}", result)
    return result


if __name__ == "__main__":
    cli(run, __doc__)
