"""One batch of refinement (refine.py, DESIGN §16): samples drawn from the current model with
their exact log q in one KV-cached pass, scored against the target (u in kT, the chirality fix,
`log_w = -u - log q`), and what the objectives need besides: the bins of the fixed samples and
their log q_1/q_tau under the parameters that drew them.

`log_ratio` costs nothing for the drawn samples: the tau = 1 log probabilities come from the
logits the sampler already computed (`sampling.extend(log_p1=...)`); only the samples the
chirality fix mirrored are scored again (one no-grad pass at tau 1 and tau). With it the fkl
weights need no forward pass over the whole batch, so the gradient can be taken on a resampled
subset (`refine_objectives.resample`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .model import ArBG, KVCache, conditioning, token_log_probs_at
from .reweight import MIRRORED, ReweightedEnsemble, reweight
from .sampling import extend, inference, log_prob
from .tokenizer import Tokenizer


@dataclass
class Batch:
    bins: torch.Tensor  # (B, T) long, as drawn
    fixed_bins: torch.Tensor  # (B, T) the bins of the chirality-fixed samples
    frame_jac: np.ndarray  # (B,) frame log-Jacobian of the drawn samples
    lp_tau: torch.Tensor  # (B,) float64 sum_j log P_j at the loop's tau, as drawn
    ensemble: ReweightedEnsemble  # log_w over the fixed samples, unclipped
    log_ratio: np.ndarray  # (B,) float64 log q_1 - log q_tau of the fixed samples, as drawn


def draw_batch(model: ArBG, tok: Tokenizer, target, n: int, tau: float,
               generator: torch.Generator) -> Batch:
    """One training batch of n samples at tau from `model` (eval mode) for a refine.Target."""
    device = generator.device
    cond = conditioning(target.features, device=device, frame=tok.cfg.frame)
    T = cond.n_tokens
    with inference(model, device, bf16=False) as dtype:
        cache = KVCache(model.cfg, n, T, device=device, dtype=dtype)
        bos = torch.full((n,), model.bos, dtype=torch.long, device=device)
        lp1 = torch.zeros(n, dtype=torch.float64, device=device)
        bins, lp = extend(model, cond, cache, bos, 0, T, tau, generator, log_p1=lp1)
        xyz, frame_jac = tok.decode_system(bins, target.features, generator)
    bins, lp = bins.clone(), lp.clone()  # out of inference mode: autograd may save them
    frame_jac = frame_jac.cpu().numpy()
    log_q = lp.cpu().numpy() + tok.log_jacobian_tokens(T) + frame_jac
    has_centers = target.centers is not None and len(target.centers) > 0
    ens = reweight(xyz.cpu().numpy(), log_q, target.energy,
                   centers=target.centers if has_centers else None,
                   reference_signs=target.reference_signs if has_centers else None,
                   log_q_fn=lambda x: log_prob(model, tok, target.features, x, tau=tau,
                                               device=device, bf16=False), clip_fraction=0.0)
    fixed = bins.clone()
    ratio = (lp1 - lp).cpu().numpy()
    mirrored = np.flatnonzero(ens.status == MIRRORED)
    if len(mirrored):  # train the likelihood of what the weight is for: the fixed sample
        mb, _, _ = tok.encode_system(ens.xyz[mirrored], target.features, center=False)
        rows = torch.as_tensor(mirrored, device=device)
        fixed[rows] = mb.to(device)
        with torch.no_grad():
            at1, at_tau = token_log_probs_at(model, fixed[rows], cond, (1.0, tau))
        ratio[mirrored] = (at1.double().sum(1) - at_tau.double().sum(1)).cpu().numpy()
    return Batch(bins, fixed, frame_jac, lp, ens, ratio)
