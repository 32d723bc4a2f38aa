"""The objectives of refinement (refine.py, DESIGN §16): one batch's loss, on the tau = 1
density of the model, the adaptive tempering of the fkl weights, and the guard's statistic
of log weights. `batch` is refine_batch.Batch,
`cfg` a refine.RefineConfig (not imported here: refine.py imports this module).

- "fkl": self-normalized importance-weighted maximum likelihood (forward KL(p || q)), weights
  tempered as w^beta with beta annealed from `beta0` to 1 and, per batch, lowered further until
  the tempered weights keep `batch_ess` of the batch as effective samples (adaptive tempering, as
  SMC samplers choose their next temperature): each step then moves q toward q^(1-beta) p^beta
  on many samples instead of fitting the one best sample of a batch whose log weights span 10^11
  nats. It may draw at any tau: the tempered target is q_1^(1-beta) p^beta, so a batch drawn at
  tau is weighted by beta log_w + (1 - beta) log q_1/q_tau (with beta log_w alone, as before, a
  batch drawn at the transferable model's tau 0.7 pulled q_1 toward q_0.7^(1-beta) p^beta,
  colder at every step).
- "rkl": the score-function gradient of the reverse KL(q || p),
  `E[rho (log q + u - b) grad log q]`, rewards clipped to the batch's quantiles, b the batch
  mean, rho = q_1 / q_tau self-normalized (1 when the batch is drawn at tau = 1).
- "mix": (1 - mix) fkl + mix rkl.

The optimizer (`new_optimizer`): AdamW on every parameter, or Muon on the blocks' weight matrices
(train.optimizers, the training recipe's optimizer) with AdamW on the rest.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .model import token_log_probs
from .reweight import DROPPED
from .train import OPTIMIZERS, optimizers


class _Optimizers:
    """Several optimizers stepped as one."""

    def __init__(self, parts: list[torch.optim.Optimizer]):
        self.parts = parts

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.parts:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.parts:
            o.step()


def new_optimizer(model, name: str, lr: float) -> _Optimizers:
    """A fresh optimizer for refinement, no weight decay. "adamw": torch's AdamW with its default
    betas (the measured refinement recipe); "muon": train.optimizers' Muon + AdamW at lr."""
    if name == "adamw":
        return _Optimizers([torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)])
    if name == "muon":
        return _Optimizers(optimizers(model, "muon", lr, 0.0))
    raise ValueError(f"unknown optimizer {name!r}; choose {' or '.join(OPTIMIZERS)}")


def median_or_inf(values: np.ndarray) -> float:
    """The median of `values` with non-finite ones counted as -inf."""
    values = np.asarray(values, np.float64)
    return float(np.median(np.where(np.isfinite(values), values, -np.inf)))


def adaptive_beta(log_w: np.ndarray, beta_max: float, ess_fraction: float,
                  log_ratio: np.ndarray | None = None) -> float:
    """The largest beta <= beta_max at which the tempered weights softmax(beta log_w + (1 - beta)
    log_ratio) keep `ess_fraction` of the batch (non-finite log weights count as zero weight) as
    effective samples, by bisection on log beta; beta_max when that already keeps enough, or
    when ess_fraction is 0. log_ratio = log q_1 - log q_tau of each sample (None: drawn at tau
    1, all 0); where it is not all 0, the fraction is of the effective samples at beta = 0."""
    keep = np.isfinite(log_w)
    finite = np.asarray(log_w, np.float64)[keep]
    ratio = np.zeros_like(finite) if log_ratio is None else np.asarray(log_ratio)[keep]
    n = len(np.asarray(log_w))
    if ess_fraction <= 0 or len(finite) < 2:
        return beta_max

    def ess(beta):
        t = beta * finite + (1.0 - beta) * ratio
        w = np.exp(t - t.max())
        return w.sum() ** 2 / (w ** 2).sum() / n

    target = ess_fraction * ess(0.0) * n / len(finite)  # ess_fraction with log_ratio None
    if ess(beta_max) >= target:
        return beta_max
    lo, hi = math.log(1e-16), math.log(beta_max)  # ess(exp(lo)) ~ ess(0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ess(math.exp(mid)) >= target else (lo, mid)
    return math.exp(lo)


def resample(weights: np.ndarray, m: int, u: float) -> tuple[np.ndarray, np.ndarray]:
    """Systematic resampling of m draws from normalized `weights` with one uniform u in [0, 1):
    (the distinct indices, their counts / m). sum_k c_k f(i_k) is an unbiased estimate of
    sum_i w_i f(i), with the least variance of the standard schemes."""
    cdf = np.cumsum(np.asarray(weights, np.float64))
    picks = np.searchsorted(cdf / cdf[-1], (u + np.arange(m)) / m, side="right")
    idx, counts = np.unique(np.minimum(picks, len(cdf) - 1), return_counts=True)
    return idx, counts / m


def _fkl_loss(model, batch, cond, beta_max: float, tau: float, batch_ess: float,
              grad_samples: int = 0, u: float = 0.5) -> tuple[torch.Tensor, float]:
    """-sum_i wbar_i log q_1(y_i) / T and beta: wbar = softmax(beta log_w + (1 - beta) log
    q_1/q_tau) over the batch, the weights of the tempered target q_1^(1-beta) p^beta for a batch
    drawn at tau (without the ratio, a batch drawn at tau < 1 would pull q_1 toward q_tau^(1-beta)
    p^beta: colder at every step). The ratio is of the fixed sample's own density: exact for a
    one-sided weight, an approximation for a two-sided one (both enantiomers likely); tau 1
    leaves it out. grad_samples > 0: the gradient of the same sum estimated on that many
    systematic resamples (`u` their uniform), so the backward pass sees only the distinct
    samples the weights pick (about the batch's effective count) instead of all of it."""
    log_w = batch.ensemble.log_w
    if not np.isfinite(log_w).any():
        return torch.zeros((), device=batch.bins.device), beta_max
    ratio = None if tau == 1.0 else batch.log_ratio
    beta = adaptive_beta(log_w, beta_max, batch_ess, ratio)
    t = beta * log_w + (0.0 if ratio is None else (1.0 - beta) * ratio)
    w = np.exp(np.where(np.isfinite(t), t, -np.inf) - np.max(t[np.isfinite(t)]))
    idx = np.arange(len(w))
    if 0 < grad_samples < len(w):
        idx, w = resample(w, grad_samples, u)
    lp1 = token_log_probs(model, batch.fixed_bins[torch.as_tensor(idx, device=batch.bins.device)],
                          cond).double().sum(1)  # (len(idx),)
    w = torch.as_tensor(w / w.sum(), device=lp1.device)
    return -(w * lp1).sum() / cond.n_tokens, beta


def _rkl_loss(model, batch, cond, tok, clip: float) -> torch.Tensor:
    """Score-function surrogate of KL(q_1 || p) / T from a batch drawn at the loop's tau."""
    lp1 = token_log_probs(model, batch.bins, cond).double().sum(1)  # (B,)
    with torch.no_grad():
        rho = torch.softmax(lp1 - batch.lp_tau, 0).cpu().numpy()  # q_1 / q_tau, normalized
        log_q1 = lp1.cpu().numpy() + tok.log_jacobian_tokens(cond.n_tokens) + batch.frame_jac
    reward = log_q1 + batch.ensemble.u  # log q + u; NaN for dropped samples
    ok = np.isfinite(reward) & (batch.ensemble.status != DROPPED)
    if not ok.any():
        return torch.zeros((), device=batch.bins.device)
    lo, hi = np.quantile(reward[ok], [clip, 1.0 - clip])
    reward = np.where(ok, np.clip(reward, lo, hi), hi)  # bad samples: the worst reward
    adv = reward - rho @ reward  # batch baseline
    adv = adv / max(math.sqrt(rho @ adv ** 2), 1e-8)  # scale-free, like the fkl term
    adv = torch.as_tensor(rho * adv, device=lp1.device)
    return (adv * lp1).sum() / cond.n_tokens


def loss_of(model, batch, cond, tok, cfg, beta: float, tau: float, u: float = 0.5
            ) -> tuple[torch.Tensor, float]:
    """The batch's loss and the beta of its fkl weights (at most `beta`: lowered per batch to
    keep cfg.batch_ess of it effective), for a batch drawn at `tau`; u: the uniform of the
    fkl term's resampling (cfg.grad_samples)."""
    if cfg.objective == "rkl":
        return _rkl_loss(model, batch, cond, tok, cfg.reward_clip), beta
    fkl, beta = _fkl_loss(model, batch, cond, beta, tau, cfg.batch_ess, cfg.grad_samples, u)
    if cfg.objective == "fkl":
        return fkl, beta
    return (1 - cfg.mix) * fkl + cfg.mix * _rkl_loss(model, batch, cond, tok, cfg.reward_clip), beta
