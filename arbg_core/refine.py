"""Refinement against the energy alone, no MD (DESIGN §16, issue #19).

Each step draws a batch from the current model with its exact log q, scores it (u in kT, the
chirality fix and `log_w = -u - log q` of reweight.py) and takes one gradient step on the tau = 1
density of the model, whatever tau the batch was drawn at:

"fkl" (importance-weighted likelihood, adaptively tempered), "rkl" (the reverse KL's score
function) or "mix" of the two: refine_objectives.py.

The collapse guard: every `eval_every` steps a held-aside batch of fresh samples (the same seed at
every check, never trained on, so that checks compare models rather than draws) gives a score,
the median of its log weights (dropped samples count as -inf), and its ESS. The median says how
close a typical sample is to the target and stays informative where the ESS is one or two samples
out of a thousand (a mean, even clipped, follows the clashes' 10^10-kT energies). The state of
the best score is kept. When the score falls `rollback_nats` below the best, or the ESS below
`rollback` x the best state's (once that held at least `MIN_ESS_COUNT` effective samples), the
model goes back to the best state with a fresh optimizer at half the learning rate; after
`max_rollbacks` of those refinement stops. The result is the best state.
Before/after ESS come from fresh samples drawn the way `arbg sample` draws them, scored with the
model's own exact log q, so SNIS stays exact whatever the proposal became. The refined model is
measured at the loop's tau and at `final_taus`, and the tau of the highest ESS goes on its card:
refinement moves the tau = 1 density toward p, so the cooling its parent needed (a transferable
model's 0.7) can leave the refined model's proposals colder than p, out of reach of the weights.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .checks import one_of
from .flags import option
from .model import ArBG, conditioning
from .peptide import AtomFeatures
from .reweight import ReweightedEnsemble, log_weights, reweight
from .sampling import log_prob, sample
from .tokenizer import Tokenizer
from .refine_batch import draw_batch
from .refine_objectives import loss_of, median_or_inf, new_optimizer
from .train import OPTIMIZERS

OBJECTIVES = ("fkl", "rkl", "mix")
MIN_ESS_COUNT = 20  # effective samples below which an ESS fall is noise, not collapse
# progress(stage, done, total, info): stage "before" | "refine" | "after"; in "refine", done and
# total count steps (a --steps budget) or whole seconds (a --minutes budget)
Progress = Callable[[str, int, int, dict], None]


@dataclass(frozen=True)
class RefineConfig:
    objective: str = option("fkl", "fkl: importance-weighted max likelihood (tempered weights); "
                          "rkl: reverse KL by the score function; mix: both", choices=OBJECTIVES)
    steps: int | None = option(100, "parameter updates (with minutes: whichever ends first)")
    minutes: float | None = option(None, "wall-clock budget of the loop, guard checks included")
    batch_size: int = option(256, "samples drawn per update")
    # with the q_1/q_tau ratio in the fkl weights, Muon 2e-4 raised the transferable model's
    # ESS for three unseen dipeptides x3.1 in 30 minutes with mean E-W2 not worse
    # (results/refine_dipeptides_v3_muon.json); AdamW was measured at 1e-4 before the ratio
    lr: float = option(2e-4, "learning rate")
    optimizer: str = option("muon", "muon on the blocks' weight matrices (AdamW on the rest), "
                            "or adamw", choices=OPTIMIZERS)
    beta0: float = option(0.25, "fkl: weights tempered as w^beta, beta annealed from beta0 to 1")
    anneal: float = option(0.5, "fraction of the budget over which beta reaches 1")
    batch_ess: float = option(0.25, "fkl: beta lowered per batch until the tempered weights "
                            "keep this fraction of the batch as effective samples (0: off)")
    grad_samples: int = option(64, "fkl: the gradient taken on this many systematic resamples "
                               "of the weighted batch (the backward pass sees only the distinct "
                               "ones); 0: on every sample, weighted")
    reward_clip: float = option(0.05, "rkl: rewards clipped to the batch's [q, 1 - q] quantiles")
    mix: float = option(0.5, "mix: weight of the rkl term")
    # drawn at 1, the tempered weights keep batch_ess of the batch; drawn at a card's 0.7,
    # the q_1/q_0.7 ratio alone left ~1 effective sample per step of ~100 tokens
    tau: float | None = option(1.0, "temperature the loop draws at (None: the model card's); the "
                             "gradient is always of the tau = 1 density")
    eval_every: int = option(10, "steps between held-aside ESS checks (the collapse guard)")
    eval_n: int = option(1024, "fresh samples per held-aside ESS check")
    rollback: float = option(0.5, "roll back to the best state when the held-aside ESS falls "
                           "below this fraction of the best state's")
    rollback_nats: float = option(2.0, "... or its mean clipped log weight this far below the best")
    max_rollbacks: int = option(3, "stop after this many rollbacks")
    final_n: int = option(4000, "fresh samples for the ESS before and after (on the card)")
    final_taus: str = option("0.85,1.0", "temperatures tried for the refined model besides the "
                             "loop's: the one whose final_n fresh samples give the highest ESS "
                             "goes on the card (a refined model may need less cooling than its "
                             "parent); empty: the loop's")
    grad_clip: float = option(1.0, "gradient norm clip")
    clip_fraction: float = option(0.002, "largest fraction of log weights dropped in ESS checks")
    seed: int = option(0, "random seed of the loop; checks and before/after use derived seeds")

    def __post_init__(self):
        one_of(self, "objective", OBJECTIVES)
        one_of(self, "optimizer", OPTIMIZERS)
        if self.steps is None and self.minutes is None:
            raise ValueError("give a budget: steps or minutes (or both: whichever ends first)")
        if (self.steps is not None and self.steps < 1) or (
                self.minutes is not None and not self.minutes > 0):
            raise ValueError("steps must be at least 1 and minutes positive")
        if min(self.batch_size, self.eval_n, self.final_n) < 2 or self.eval_every < 1 or (
                self.grad_samples < 0):
            raise ValueError("batch_size, eval_n and final_n must be at least 2, eval_every 1, "
                             "grad_samples 0 or more")
        if not (self.lr > 0 and self.grad_clip > 0 and 0 < self.beta0 <= 1
                and 0 < self.anneal <= 1 and 0 <= self.batch_ess < 1
                and 0 <= self.reward_clip < 0.5 and 0 <= self.mix <= 1
                and 0 < self.rollback < 1 and self.rollback_nats > 0 and self.max_rollbacks >= 0
                and 0 <= self.clip_fraction < 1):
            raise ValueError("lr, grad_clip, rollback_nats > 0; beta0, anneal in (0, 1]; "
                             "batch_ess in [0, 1); reward_clip in [0, 0.5); mix in [0, 1]; "
                             "rollback in (0, 1); max_rollbacks >= 0; clip_fraction in [0, 1)")
        for t in [self.tau, *self._final_taus()]:
            if t is not None and not 0.05 <= t <= 5.0:
                raise ValueError(f"temperature tau={t} is outside the sensible range 0.05..5")

    def _final_taus(self) -> list[float]:
        try:
            return [float(t) for t in self.final_taus.split(",") if t.strip()]
        except ValueError:
            raise ValueError(f"final_taus must be comma-separated numbers, got "
                             f"{self.final_taus!r}") from None

    def tau_candidates(self, loop_tau: float) -> list[float]:
        """The loop's tau first, then final_taus."""
        return [loop_tau] + [t for t in self._final_taus() if t != loop_tau]

    @property
    def fresh_seed(self) -> int:
        """Seed of the fresh samples before and after (never drawn by the loop or the guard)."""
        return self.seed + 100_003

    def loop_tau(self, card_tau: float) -> float:
        """The temperature the loop draws at: tau, else the card's (rkl: 1)."""
        return float(self.tau) if self.tau is not None else (
            1.0 if self.objective == "rkl" else float(card_tau))


@dataclass(frozen=True)
class Target:
    """What refinement knows of the system: its atoms, `energy(xyz (B, A, 3) nm) -> u (B,) kT`
    and, optionally, the chiral centers (C, 4) with their reference signs (C,). No OpenMM here:
    `target_for` builds one from a peptide, a toy passes a plain function."""
    features: AtomFeatures
    energy: Callable[[np.ndarray], np.ndarray]
    centers: np.ndarray | None = None
    reference_signs: np.ndarray | None = None


def target_for(pep, preset: str) -> Target:
    """A peptide's Target under a force-field preset (OpenMM energies, chirality check)."""
    from .energy import EnergyModel
    from .reweight import chiral_centers, handedness

    em = EnergyModel(pep.topology, preset)
    centers = chiral_centers(pep.topology)
    return Target(pep.features, em.reduced_energy, centers, handedness(pep.xyz[None], centers)[0])


@dataclass
class RefineResult:
    model: ArBG  # the refined (best) state, eval mode, gradients off, on the loop's device
    tau: float  # the temperature on its card: of the tau_candidates, the one of highest ESS
    tau_before: float  # the parent's (its card's), at which `before` was measured
    steps: int  # updates taken (rolled-back ones included)
    wall_time_s: float
    rollbacks: int
    before: dict  # ReweightedEnsemble.summary() of the parent on fresh samples
    after: dict  # the same of the refined model
    history: list[dict]  # one entry per held-aside check
    tau_scan: dict  # {tau: ESS fraction of final_n fresh samples} of the refined model

    def record(self, cfg: RefineConfig) -> dict:
        """The card's `refined` entry (JSON-ready)."""
        return {"objective": cfg.objective, "steps": self.steps, "tau": self.tau,
                "tau_before": self.tau_before,
                "wall_time_s": self.wall_time_s, "rollbacks": self.rollbacks,
                "ess_before": self.before["ess_fraction"], "ess_after": self.after["ess_fraction"],
                "n_fresh": self.before["counts"]["n"], "before": self.before, "after": self.after,
                "tau_scan": self.tau_scan,
                "config": asdict(cfg), "history": self.history}


# ------------------------------------------------------------------------------- drawing


def measure(model: ArBG, tok: Tokenizer, target: Target, n: int, tau: float, seed: int,
            clip_fraction: float = 0.002) -> ReweightedEnsemble:
    """SNIS of n fresh samples, as `arbg sample` does it: chirality fix, two-sided log q."""
    device = next(model.parameters()).device
    xyz, log_q = sample(model, tok, target.features, n, tau=tau, seed=seed, device=device)

    def log_q_fn(frames):
        return log_prob(model, tok, target.features, frames, tau=tau, device=device)

    centers = target.centers if target.centers is not None and len(target.centers) else None
    signs = target.reference_signs if centers is not None else None
    return reweight(xyz, log_q, target.energy, log_q_fn=log_q_fn, centers=centers,
                    reference_signs=signs, clip_fraction=clip_fraction)


# ------------------------------------------------------------------------------- the loop


class _Guard:
    """The held-aside check: keeps the best state, says when to roll back."""

    def __init__(self, model: ArBG, tok: Tokenizer, target: Target, cfg: RefineConfig, tau):
        self.model, self.tok, self.target, self.cfg, self.tau = model, tok, target, cfg, tau
        self.best, self.best_ess = -math.inf, 0.0
        self.best_state = copy.deepcopy(model.state_dict())  # kept even if nothing scores
        self.n_checks = self.rollbacks = 0

    def check(self) -> dict:
        """Score and ESS of fresh held-aside samples, and the action taken:
        "best" | "keep" | "rollback"."""
        seed = self.cfg.seed + 1  # the loop's own generator never draws these
        self.n_checks += 1
        ens = measure(self.model, self.tok, self.target, self.cfg.eval_n, self.tau, seed,
                      self.cfg.clip_fraction)
        raw = log_weights(ens.u, ens.log_q)  # before clip_fraction drops the largest
        score, e = median_or_inf(raw), ens.ess_fraction
        out = {"score": score, "ess": e, "action": "keep"}
        if score > self.best:
            self.best, self.best_ess = score, e
            self.best_state = copy.deepcopy(self.model.state_dict())
            out["action"] = "best"
        elif score < self.best - self.cfg.rollback_nats or (
                self.best_ess * self.cfg.eval_n >= MIN_ESS_COUNT
                and e < self.cfg.rollback * self.best_ess):
            self.model.load_state_dict(self.best_state)
            self.rollbacks += 1
            out["action"] = "rollback"
        return out


def _trainable_copy(model: ArBG) -> ArBG:
    """A copy to train (the loaded model may be shared read-only): eval mode (no dropout, and
    the sampler's check), gradients on."""
    work = ArBG(model.cfg).to(next(model.parameters()).device)
    work.load_state_dict(model.state_dict())
    return work.eval().requires_grad_(True)


def _fraction_done(cfg: RefineConfig, step: int, elapsed_s: float) -> float:
    by_steps = step / cfg.steps if cfg.steps is not None else 0.0
    by_time = elapsed_s / (60.0 * cfg.minutes) if cfg.minutes is not None else 0.0
    return max(by_steps, by_time)


def refine(model: ArBG, tok: Tokenizer, target: Target, cfg: RefineConfig,
           card_tau: float = 1.0, progress: Progress | None = None) -> RefineResult:
    """Refine a copy of `model` against `target` (the model itself is left untouched)."""
    report = progress or (lambda *a: None)
    tau = cfg.loop_tau(card_tau)
    report("before", 0, 1, {})
    before = measure(model, tok, target, cfg.final_n, card_tau, cfg.fresh_seed,
                     cfg.clip_fraction)
    report("before", 1, 1, {"ess": before.ess_fraction})
    work = _trainable_copy(model)
    device = next(work.parameters()).device
    cond = conditioning(target.features, device=device, frame=tok.cfg.frame)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    guard = _Guard(work, tok, target, cfg, tau)
    lr, history = cfg.lr, [{"step": 0, "elapsed_s": 0.0} | guard.check()]
    optimizer = new_optimizer(work, cfg.optimizer, lr)
    step, t0, total = 0, time.perf_counter(), cfg.steps or round(60 * cfg.minutes)
    while _fraction_done(cfg, step, time.perf_counter() - t0) < 1.0:
        frac = _fraction_done(cfg, step, time.perf_counter() - t0)
        beta = min(1.0, cfg.beta0 + (1.0 - cfg.beta0) * frac / cfg.anneal)
        batch = draw_batch(work, tok, target, cfg.batch_size, tau, generator)
        u = float(torch.rand((), generator=generator)) if cfg.grad_samples else 0.5
        loss, beta = loss_of(work, batch, cond, tok, cfg, beta, tau, u)
        optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(work.parameters(), cfg.grad_clip)
            optimizer.step()
        step += 1
        elapsed = time.perf_counter() - t0
        info = {"beta": beta, "batch_ess": batch.ensemble.ess_fraction, "score": guard.best}
        report("refine", step if cfg.steps else min(round(elapsed), total), total, info)
        if step % cfg.eval_every == 0:
            history.append({"step": step, "elapsed_s": time.perf_counter() - t0, "beta": beta,
                            "batch_ess": batch.ensemble.ess_fraction} | guard.check())
            if history[-1]["action"] == "rollback":
                if guard.rollbacks > cfg.max_rollbacks:
                    break
                lr /= 2  # a fresh optimizer: the old moments led away from the best state
                optimizer = new_optimizer(work, cfg.optimizer, lr)
    wall = time.perf_counter() - t0
    if step % cfg.eval_every:  # the last steps get their check too
        history.append({"step": step, "elapsed_s": wall} | guard.check())
    work.load_state_dict(guard.best_state)
    work.requires_grad_(False)
    if improved(history):
        best, after, scan = pick_tau(work, tok, target, cfg, tau, report)
    else:  # no check beat the parent: the result is the parent, at the parent's tau
        best, after, scan = pick_tau(work, tok, target, cfg, card_tau, report, others=False)
    return RefineResult(work, best, card_tau, step, wall, guard.rollbacks, before.summary(),
                        after.summary(), history, scan)


def improved(history: list[dict]) -> bool:
    """Whether a held-aside check after the start beat the parent (else the result is it)."""
    return any(h["action"] == "best" for h in history[1:])


def pick_tau(model: ArBG, tok: Tokenizer, target: Target, cfg: RefineConfig, loop_tau: float,
             report: Progress | None = None, others: bool = True
             ) -> tuple[float, ReweightedEnsemble, dict]:
    """(tau of the highest ESS among cfg.tau_candidates(loop_tau), its ensemble, {tau: ESS}),
    each tau measured on final_n fresh samples of the same seed (a paired comparison; ties go
    to the loop's tau). With others=False, loop_tau alone."""
    report = report or (lambda *a: None)
    taus = cfg.tau_candidates(loop_tau) if others else [loop_tau]
    measured = {}
    for k, t in enumerate(taus):
        report("after", k, len(taus), {"tau": t})
        measured[t] = measure(model, tok, target, cfg.final_n, t, cfg.fresh_seed,
                              cfg.clip_fraction)
    best = max(taus, key=lambda t: measured[t].ess_fraction)
    report("after", len(taus), len(taus), {"tau": best, "ess": measured[best].ess_fraction})
    return best, measured[best], {str(t): e.ess_fraction for t, e in measured.items()}


# ------------------------------------------------------------------------------- checkpoints


def refine_checkpoint(loaded, pep, cfg: RefineConfig, out: str | Path,
                      progress: Progress | None = None) -> dict:
    """Refine a loaded checkpoint for the peptide `pep` and write an ordinary per-system
    checkpoint folder `out` (a transferable parent gives a model of `pep` alone), put in place
    whole when done (files.output_folder: an error or a kill leaves no half-written model).
    Returns the card written."""
    from . import checkpoint
    from .files import output_folder

    loaded.check_serves(pep.sequence, pep.termini)
    with output_folder(out, checkpoint.CONFIG) as tmp:
        card = _refine_into(loaded, pep, cfg, tmp, progress)
    return card


def _refine_into(loaded, pep, cfg: RefineConfig, out: Path, progress: Progress | None) -> dict:
    from . import checkpoint

    preset = loaded.config.preset
    result = refine(loaded.model, loaded.tokenizer, target_for(pep, preset), cfg,
                    card_tau=loaded.card.default_tau, progress=progress)
    system = checkpoint.SystemSpec(pep.sequence, pep.termini, preset)
    parent = {"name": loaded.name, "transferable": loaded.transferable, "tau": loaded.tau}
    card = {"name": f"{loaded.title} refined for {system.label}", "system": asdict(system),
            "tau": result.tau,
            "description": f"{loaded.title} refined against the {preset} energy alone (no MD) "
                           f"for {system.label}: {cfg.objective}, {result.steps} steps, "
                           f"{result.wall_time_s:.0f} s, {result.rollbacks} rollbacks; ESS "
                           f"{100 * result.before['ess_fraction']:.2f}% -> "
                           f"{100 * result.after['ess_fraction']:.2f}% on "
                           f"{cfg.final_n} fresh samples",
            "parent": parent | {"card": {k: loaded.card.raw[k] for k in ("training", "evaluation")
                                         if k in loaded.card.raw}},
            "refined": result.record(cfg)}
    checkpoint.save(out, result.model, loaded.tokenizer.cfg, system=system, card=card,
                    extra={"refined_from": parent, "refine": asdict(cfg)})
    return card
