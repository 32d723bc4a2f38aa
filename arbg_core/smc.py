"""Twisted sequential Monte Carlo over residue blocks (DESIGN section 9).

K particles are generated block by block, block r being the atoms of residue r, by a proposal
whose conditionals are the model's own. With u_r the reduced energy of the sub-system of
residues 1..r and the twist psi_r = exp(-lambda_r u_r) (psi_0 = 1), the intermediate targets are
gamma_r = q(x_{<=r}) psi_r for r < R and gamma_R = exp(-u(x)). The incremental weight of block r
is gamma_r(x_{<=r}) / (gamma_{r-1}(x_{<r}) q(x_r | x_{<r})):

    r < R:  q(x_{<=r}) psi_r / (q(x_{<r}) psi_{r-1} q(x_r | x_{<r})) = psi_r / psi_{r-1}
            log alpha_r = -lambda_r u_r + lambda_{r-1} u_{r-1}
    r = R:  exp(-u(x)) / (q(x_{<R}) psi_{R-1} q(x_R | x_{<R})) = exp(-u(x)) / (q(x) psi_{R-1})
            log alpha_R = -u(x) - log q(x) + lambda_{R-1} u_{R-1}

q's factors cancel in every step but the last, where the chain rule q(x_{<R}) q(x_R | x_{<R})
= q(x) leaves the whole path's log q; without resampling the sum telescopes to the SNIS weight
-u(x) - log q(x). So the sampler only needs the accumulated log q of each particle.

Log weights are stored so that log Z_hat = logsumexp(log_w) - log K at any time: resampling
replaces every particle's log weight by the log mean weight. Populations run independently
(memory: one KV cache per population) therefore combine by plain concatenation: each run's
particles then carry its Z_hat, the standard unbiased combination of independent SMC runs.

Chirality (as for SNIS, reweight.fix_chirality): after the last block an all-inverted particle is
mirrored x -> -x, a mixed one gets weight 0. The weight keeps log q(x) of the path as drawn.
With resampling the marginal density of the final particles is not q, so SNIS's two-sided
q(y) + q(-y) has no SMC analogue; the weight is the path weight of the drawn x, and since u is
invariant under inversion, u(-x) = u(x), mirroring maps the weighted measure exp(-u) on the
all-L and all-D regions onto (twice) exp(-u) on the all-L region: consistent.

Like reweight.py this module takes plain callables, never the model or OpenMM:
`proposal(r) -> (xyz_r (K, A_r, 3) nm, log_q_r (K,))` generates block r (r = 1..R in order) and
`proposal.reorder(indices)` permutes its state; `partial_energy(xyz_prefix, r) -> (K,)` kT;
`full_energy(xyz) -> (K,)` kT. `sampling.BlockProposal` is the model's adapter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np
from scipy.special import logsumexp

from .reweight import (DROPPED, ReweightedEnsemble, ensemble_from_log_weights, ess,
                       fix_chirality, normalized_weights, systematic)

Progress = Callable[[str, int, int], None]  # (stage "sample" | "energy", block r, R)
SCHEDULES = ("constant", "linear")


class Proposal(Protocol):
    def __call__(self, r: int) -> tuple[np.ndarray, np.ndarray]: ...

    def reorder(self, indices: np.ndarray) -> None: ...


def twist_schedule(schedule: str | Sequence[float], n_blocks: int) -> np.ndarray:
    """(R + 1,) float64 lambda_0..lambda_R: lambda_0 = 0 (psi_0 = 1) and lambda_R = 1 (the target).

    "constant": lambda_r = 1; "linear": lambda_r = r / R; or the R - 1 values lambda_1..lambda_{R-1}
    in [0, 1] given as a sequence.
    """
    R = int(n_blocks)
    if R < 1:
        raise ValueError("SMC needs at least one block")
    if isinstance(schedule, str):
        if schedule == "constant":
            mid = np.ones(R - 1)
        elif schedule == "linear":
            mid = np.arange(1, R) / R
        else:
            raise ValueError(f"unknown twist schedule {schedule!r}; choose one of "
                             f"{', '.join(SCHEDULES)} or give {R - 1} values")
    else:
        mid = np.asarray(schedule, dtype=np.float64).reshape(-1)
        if len(mid) != R - 1 or not np.all((mid >= 0) & (mid <= 1)):
            raise ValueError(f"a twist schedule for {R} blocks is {R - 1} values in [0, 1]")
    return np.concatenate([[0.0], mid, [1.0]])


def _log_twist(lam: float, u: np.ndarray) -> np.ndarray:
    """log psi = -lambda u; lambda = 0 gives psi = 1 even where u = +inf."""
    return np.zeros_like(u) if lam == 0 else -lam * u


def _energies(u, n: int) -> np.ndarray:
    """(n,) float64 with every non-finite value (NaN, +-inf) set to +inf: weight 0."""
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    if len(u) != n:
        raise ValueError(f"energy callable returned {len(u)} values for {n} particles")
    return np.where(np.isfinite(u), u, np.inf)


def _log_mean_exp(log_w: np.ndarray) -> float:
    return float(logsumexp(log_w) - np.log(len(log_w))) if np.isfinite(log_w).any() else -np.inf


def _sanitize(log_w: np.ndarray) -> np.ndarray:
    """NaN (-inf + inf: a particle already dead) and +inf become -inf."""
    log_w[~(log_w < np.inf)] = -np.inf
    return log_w


@dataclass
class Population:
    """One SMC run's particles before clipping and normalization; shapes as in ReweightedEnsemble.

    log_w includes the run's accumulated log Z, so logsumexp(log_w) - log K = log_z_hat.
    """

    xyz: np.ndarray  # (K, A, 3) float32 nm, after the chirality fix
    xyz_drawn: np.ndarray  # (K, A, 3) float32 nm, as generated
    log_q: np.ndarray  # (K,) log q of the drawn path, nats
    u: np.ndarray  # (K,) kT of the fixed sample; NaN for dropped ones
    log_w: np.ndarray  # (K,)
    status: np.ndarray  # (K,) int8, reweight.KEPT | MIRRORED | DROPPED
    log_z_hat: float
    history: list = field(default_factory=list)  # one dict per block
    time_generation_s: float = 0.0
    time_energy_s: float = 0.0
    n_energy_evaluations: int = 0  # frames passed to partial_energy / full_energy
    n_model_evaluations: int | None = None  # proposal.n_evaluations if it counts them


@dataclass
class _Growing:
    """The particles of a population between blocks; all arrays (K,) but `parts`."""

    parts: list  # per block so far (K, A_r, 3) float32 nm
    log_q: np.ndarray  # log q of the path so far, nats
    log_w: np.ndarray
    u_prev: np.ndarray  # u_{r-1} of each particle, kT (0 before block 1)
    t_gen: float = 0.0
    t_energy: float = 0.0
    n_energy: int = 0

    @property
    def K(self) -> int:
        return len(self.log_w)


def smc_population(proposal: Proposal, partial_energy: Callable, full_energy: Callable,
                   n_blocks: int, *, threshold: float = 0.5,
                   schedule: str | Sequence[float] = "constant",
                   rng: int | np.random.Generator | None = 0, centers: np.ndarray | None = None,
                   reference_signs: np.ndarray | None = None,
                   progress: Progress | None = None) -> Population:
    """Run one population of twisted SMC; K is the number of particles the proposal returns.

    After the weights of block r < R, the particles are resampled (systematic; the proposal,
    coordinates, log q and u_r all reordered by the same indices) when the normalized ESS is below
    `threshold` (0: never, plain SNIS with the same samples; 1: nearly always). If no weight is
    finite the population has collapsed: nothing is resampled and every final weight is 0.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"SMC resampling threshold must be in [0, 1], got {threshold}")
    if (centers is None) != (reference_signs is None):
        raise ValueError("give both centers and reference_signs, or neither")
    R = int(n_blocks)
    lam = twist_schedule(schedule, R)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    report = progress or (lambda *a: None)
    pop, history = None, []
    for r in range(1, R + 1):
        pop = _draw_block(proposal, r, pop)
        report("sample", r, R)
        xyz = np.concatenate(pop.parts, axis=1)  # (K, A_{<=r}, 3)
        t0 = time.perf_counter()
        if r < R:
            _twist_weights(pop, partial_energy(xyz, r), lam[r], lam[r - 1])
        else:
            fixed, u, status = _final_weights(pop, xyz, full_energy, lam[R - 1], centers,
                                              reference_signs)
        pop.t_energy += time.perf_counter() - t0
        report("energy", r, R)
        history.append(_resample_if_degenerate(pop, proposal, r, r < R, lam[r], threshold, rng))
    return Population(fixed.astype(np.float32), xyz, pop.log_q, u, pop.log_w, status,
                      _log_mean_exp(pop.log_w), history, pop.t_gen, pop.t_energy, pop.n_energy,
                      getattr(proposal, "n_evaluations", None))


def _draw_block(proposal: Proposal, r: int, pop: _Growing | None) -> _Growing:
    """Block r of every particle from the proposal; adds its log q (block 1 starts `pop`)."""
    t0 = time.perf_counter()
    xyz_r, log_q_r = proposal(r)
    t_gen = time.perf_counter() - t0
    log_q_r = np.asarray(log_q_r, dtype=np.float64).reshape(-1)
    if pop is None:
        K = len(log_q_r)
        pop = _Growing([], np.zeros(K), np.zeros(K), np.zeros(K))
    pop.t_gen += t_gen
    pop.parts.append(np.asarray(xyz_r, dtype=np.float32))
    pop.log_q = pop.log_q + log_q_r
    pop.log_w[log_q_r == -np.inf] = -np.inf  # drawn outside the parametrization: dead at once
    return pop


def _twist_weights(pop: _Growing, u_r, lam_r: float, lam_prev: float) -> None:
    """r < R: log alpha_r = -lambda_r u_r + lambda_{r-1} u_{r-1} (module docstring)."""
    u_r = _energies(u_r, pop.K)
    pop.n_energy += pop.K
    with np.errstate(invalid="ignore"):  # -inf + inf: a particle already dead
        pop.log_w = _sanitize(pop.log_w + _log_twist(lam_r, u_r) - _log_twist(lam_prev, pop.u_prev))
    pop.u_prev = u_r


def _final_weights(pop: _Growing, xyz: np.ndarray, full_energy: Callable, lam_prev: float,
                   centers, reference_signs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """r = R: chirality fix, then log alpha_R = -u(x) - log q(x) + lambda_{R-1} u_{R-1}.
    Returns (fixed xyz (K, A, 3), u (K,) kT with NaN for dropped particles, status (K,))."""
    K = pop.K
    status = np.zeros(K, np.int8)
    fixed = xyz
    if centers is not None and len(np.asarray(reference_signs).reshape(-1)):
        fixed, status = fix_chirality(xyz, centers, reference_signs)
    live = status != DROPPED
    u = np.full(K, np.nan)
    if live.any():
        u[live] = _energies(full_energy(fixed[live]), int(live.sum()))
        pop.n_energy += int(live.sum())
    final = np.where(live, -u - pop.log_q, -np.inf)  # -u(x) - log q(x)
    with np.errstate(invalid="ignore"):
        pop.log_w = _sanitize(pop.log_w + final - _log_twist(lam_prev, pop.u_prev))
    return fixed, u, status


def _resample_if_degenerate(pop: _Growing, proposal: Proposal, r: int, may_resample: bool,
                            lam_r: float, threshold: float, rng: np.random.Generator) -> dict:
    """Block r's history entry; resamples (before the last block only) when ESS / K < threshold."""
    K = pop.K
    e, log_z = ess(pop.log_w), _log_mean_exp(pop.log_w)  # log_z: estimate of log Z_r of gamma_r
    step = {"block": r, "lambda": float(lam_r), "ess": e, "ess_fraction": e / K,
            "log_z": log_z, "resampled": False, "n_ancestors": K}
    if may_resample and e / K < threshold and np.isfinite(log_z):
        idx = systematic(normalized_weights(pop.log_w), K, rng)
        proposal.reorder(idx)
        pop.parts = [p[idx] for p in pop.parts]
        pop.log_q, pop.u_prev = pop.log_q[idx], pop.u_prev[idx]
        pop.log_w = np.full(K, log_z)
        step.update(resampled=True, n_ancestors=int(len(np.unique(idx))))
    return step


def to_ensemble(populations: Sequence[Population], clip_fraction: float = 0.002,
                method: str = "smc") -> ReweightedEnsemble:
    """Concatenate independent populations (each weighted by its Z_hat) into one ensemble.

    extras: log_z_hat (all particles; with the chirality fix it estimates the integral of exp(-u)
    over the all-L and all-D regions, 2 Z_L, mixed samples counting 0), n_resamples, time_generation_s, time_energy_s,
    n_energy_evaluations, n_model_evaluations, and per population its history (a list of per-block
    dicts: ESS, normalized ESS, resampled or not, number of distinct ancestors, running log Z).
    """
    pops = list(populations)
    if not pops:
        raise ValueError("no SMC populations to combine")
    log_w = np.concatenate([p.log_w for p in pops])
    model_evals = [p.n_model_evaluations for p in pops]
    extras = {
        "log_z_hat": _log_mean_exp(log_w),
        "n_populations": len(pops),
        "population_sizes": [len(p.log_w) for p in pops],
        "log_z_hat_populations": [p.log_z_hat for p in pops],
        "n_resamples": sum(sum(h["resampled"] for h in p.history) for p in pops),
        "history": [p.history for p in pops],
        "time_generation_s": sum(p.time_generation_s for p in pops),
        "time_energy_s": sum(p.time_energy_s for p in pops),
        "n_energy_evaluations": sum(p.n_energy_evaluations for p in pops),
        "n_model_evaluations": None if None in model_evals else int(sum(model_evals)),
        "log_w_unclipped": log_w,
    }
    return ensemble_from_log_weights(
        np.concatenate([p.xyz for p in pops]), np.concatenate([p.log_q for p in pops]),
        np.concatenate([p.u for p in pops]), log_w, np.concatenate([p.status for p in pops]),
        clip_fraction, method, extras)
