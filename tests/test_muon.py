"""arbg_core.muon: the fp32 Newton–Schulz iteration is torch's, to bf16 precision, and a Muon step
with it moves the weights as torch's Muon does."""

import torch
from torch.optim import _muon

from arbg_core.muon import Muon, newton_schulz_fp32

COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def _relative(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_fp32_iteration_matches_torchs_bf16_one():
    g = torch.Generator().manual_seed(0)
    for shape in ((384, 128), (128, 384), (128, 128)):
        grad = torch.randn(shape, generator=g)
        ours = newton_schulz_fp32(grad, COEFFICIENTS, 5, 1e-7)
        theirs = _muon._zeropower_via_newtonschulz(grad, COEFFICIENTS, 5, 1e-7)
        assert ours.dtype == torch.float32 and ours.shape == grad.shape
        assert _relative(ours, theirs) < 0.02, shape
        # what the iteration is for: singular values pulled from their spread towards ~1
        s = torch.linalg.svdvals(ours)
        assert float(s.median()) > 0.6 and float(s.max()) < 1.3


def test_muon_step_with_the_fp32_iteration_moves_weights_like_torchs():
    g = torch.Generator().manual_seed(1)
    w0, grads = torch.randn(64, 32, generator=g), [torch.randn(64, 32, generator=g) for _ in range(3)]
    ends = []
    for fp32 in (False, True):
        w = torch.nn.Parameter(w0.clone())
        opt = Muon([w], lr=0.02, adjust_lr_fn="match_rms_adamw", fp32_iteration=fp32)
        for grad in grads:
            w.grad = grad.clone()
            opt.step()
        ends.append(w.detach())
    assert _muon._zeropower_via_newtonschulz is not newton_schulz_fp32  # restored after the step
    moved = ends[0] - w0
    assert float(moved.norm()) > 0.1
    assert _relative(ends[1] - w0, moved) < 0.02
