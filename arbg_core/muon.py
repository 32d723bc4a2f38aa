"""torch's Muon, with its Newton–Schulz iteration in fp32 on a CPU.

`torch.optim.Muon` orthogonalizes each update in bf16. On a CPU without bf16 matrix units (this
project's AVX-512 machine) bf16 matmuls of these shapes run about 10x slower than fp32: measured
here on one thread, a 384 x 128 update takes 31 ms in torch's bf16 iteration and 2.4 ms in fp32,
so the optimizer was 15 % of a `small` training step. The fp32 iteration is the same arithmetic
(coefficients, normalization, transposes), only more exact.
"""

from __future__ import annotations

import contextlib

import torch
from torch.optim import _muon


def newton_schulz_fp32(grad: torch.Tensor, ns_coefficients: tuple[float, float, float],
                       ns_steps: int, eps: float) -> torch.Tensor:
    """torch's `_zeropower_via_newtonschulz` in fp32: the quintic iteration that maps a 2D
    update towards the nearest semi-orthogonal matrix."""
    a, b, c = ns_coefficients
    x = grad.float()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


@contextlib.contextmanager
def _fp32_iteration():
    original = _muon._zeropower_via_newtonschulz
    _muon._zeropower_via_newtonschulz = newton_schulz_fp32
    try:
        yield
    finally:
        _muon._zeropower_via_newtonschulz = original


class Muon(torch.optim.Muon):
    """`torch.optim.Muon` (same arguments and state); with `fp32_iteration` its step
    orthogonalizes in fp32 (for parameters on a CPU)."""

    def __init__(self, params, fp32_iteration: bool = False, **kwargs):
        super().__init__(params, **kwargs)
        self.fp32_iteration = fp32_iteration and hasattr(_muon, "_zeropower_via_newtonschulz")

    @torch.no_grad()
    def step(self, closure=None):
        if not self.fp32_iteration:
            return super().step(closure)
        with _fp32_iteration():
            return super().step(closure)
