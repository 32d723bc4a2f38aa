"""`arbg fit`'s settings and plan: what each stage will do, and how long it should take on this
machine, from rates measured here in a short probe (DESIGN §18).

The probe times this peptide's MD under the run's protocol (one process, ns/day), a few
training steps of each candidate model size (CPU: at up to 32 frames a step, scaled linearly to
the batch; CUDA: at the batch itself, uncompiled, so an upper bound), and untrained proposals and
their energies per second. The budget (`--budget-hours`) is split into MD, training, and tuning
plus evaluation (SHARES); every size a flag gives overrides what the budget would choose, and the
plan's estimate is then that of the given sizes. Estimates of tuning and evaluation include a
rough allowance for the metrics (exact optimal transport of n_eval points), stated in the plan.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from .checks import (POSITIVE, POSITIVE_INT, TEMPERATURE_K, Range, SettingError, check, one_of,
                     optional)
from .energy import DEFAULT_PRESET, PRESETS
from .flags import option

STAGES = ("md", "data", "train", "tune", "evaluate", "model")
SHARES = {"md": 0.45, "train": 0.40, "eval": 0.15}  # of the budget
SIZE_CANDIDATES = ("base", "small")  # the budget picks the largest that reaches MIN_STEPS
MIN_STEPS = 5000  # fewer steps gave useless models (DESIGN §7)
TRAIN_FRACTION = 0.8  # of each reference replica; the rest is held back for evaluation
DEVICES = ("auto", "cpu", "cuda")
RENAMED = {"hot_temperature_k": "--hot-temperature"}  # FitConfig fields whose flag differs
MIN_MD_FRAMES = 40  # per reference replica: the 20 % held back must allow an evaluation


@dataclass(frozen=True)
class FitConfig:
    budget_hours: float = option(2.0, "wall-clock budget of the whole pipeline, hours: 45 %% MD, "
                                 "40 %% training, 15 %% tuning and evaluation")
    device: str = option("auto", "where training and sampling run (auto: CUDA when present)",
                         choices=DEVICES)
    preset: str = option(DEFAULT_PRESET, "force-field preset; its temperature is the target",
                         choices=tuple(PRESETS))
    md_ns: float | None = option(None, "MD per reference replica at the preset's temperature, ns "
                                 "(its last 20 %% held back for evaluation); None: from the budget")
    hot_ns: float | None = option(None, "MD per hot replica, ns; None: as --md-ns")
    hot_temperature_k: float = option(450.0, "thermostat of the hot replicas (coverage of rare "
                                      "basins; SNIS reweights to the preset's temperature)")
    replicas: int | None = option(None, "MD processes at each temperature; None: half the cores")
    save_ps: float = option(1.0, "time between saved MD frames, ps")
    warmup_ps: float = option(100.0, "MD warm-up after the minimization, ps")
    chunk_frames: int = option(1000, "frames per MD chunk (what a kill may lose)")
    size: str | None = option(None, "model size; None: the largest of base, small whose steps "
                              f"reach {MIN_STEPS} in the budget (else small)")
    steps: int | None = option(None, "training steps; None: what the budget's share allows")
    batch_size: int | None = option(None, "frames per training step; None: 4096 on CUDA, 256 "
                                    "on CPU")
    taus: str = option("0.8,0.9,1.0,1.1", "sampling temperatures tried when tuning tau")
    n_tune: int | None = option(None, "proposals per tau when tuning; None: from the budget "
                                "(at most 20000)")
    n_proposals: int | None = option(None, "proposals of the evaluation; None: from the budget "
                                     "(at most 100000)")
    n_eval: int | None = option(None, "samples and frames compared; None: min(10000, "
                                "proposals, held-back frames)")
    seed: int = option(0, "seed of MD, training and sampling")
    nproc: int = option(1, "training processes: more than 1 trains under torchrun, data-parallel "
                        "(one per GPU; on CPUs, gloo). Not part of what the folder is for: a "
                        "rerun may change it")

    def __post_init__(self):
        check(self, budget_hours=Range(float, 0, 1000, lo_open=True), md_ns=optional(POSITIVE),
              hot_ns=optional(POSITIVE), hot_temperature_k=TEMPERATURE_K,
              replicas=optional(POSITIVE_INT), save_ps=POSITIVE, warmup_ps=Range(float, 0),
              chunk_frames=POSITIVE_INT, steps=optional(POSITIVE_INT),
              batch_size=optional(POSITIVE_INT), n_tune=optional(POSITIVE_INT),
              n_proposals=optional(POSITIVE_INT), n_eval=optional(Range(int, 2)),
              seed=Range(int, 0, 2**29), nproc=POSITIVE_INT)
        from .model import SIZES

        one_of(self, "device", DEVICES)
        one_of(self, "preset", tuple(PRESETS))
        if self.size is not None:
            one_of(self, "size", SIZES)
        try:
            taus = [float(t) for t in self.taus.split(",")]
        except ValueError:
            raise SettingError("taus", f"must be comma-separated numbers, got {self.taus!r}")
        bad = [t for t in taus if not 0.05 <= t <= 5]
        if bad:
            raise SettingError("taus", f"must lie in 0.05..5, got {bad[0]}")
        if self.md_ns is not None and self.md_ns * 1000 / self.save_ps < MIN_MD_FRAMES:
            raise SettingError("md_ns", f"{self.md_ns} ns gives fewer than {MIN_MD_FRAMES} frames "
                               f"at {self.save_ps} ps a frame (training, validation and the "
                               "held-back test need them)", joint=True)

    @property
    def tau_values(self) -> list[float]:
        return [float(t) for t in self.taus.split(",")]


@dataclass(frozen=True)
class Rates:
    """What the probe measured here (or a test set by hand)."""
    md_ns_per_day: float  # one MD process of this peptide
    md_platform: str
    train_s_per_step: dict  # size -> seconds per step at the plan's batch
    samples_per_s: float  # proposals of the chosen size (untrained; speed does not depend on it)
    energies_per_s: float  # reduced energies of this peptide
    device: str
    cores: int
    source: str


# ------------------------------------------------------------------------------------ probe


def _probe_train(pep, size: str, batch: int, device) -> float:
    """Seconds per training step of `size` at `batch` frames (body frame, bf16 as training
    picks it; AdamW: Muon's extra work on the small matrices is not timed)."""
    import torch

    from .batches import encode_batch
    from .loop import use_bf16
    from .model import ArBG, ModelConfig, train_loss
    from .tokenizer import Tokenizer, TokenizerConfig
    from .train import TrainConfig

    n = batch if device.type == "cuda" else min(batch, 32)
    rng = np.random.default_rng(0)
    xyz = (pep.xyz[None] + rng.normal(0, 0.02, (n, pep.n_atoms, 3))).astype(np.float32)
    mcfg = ModelConfig.preset(size)
    tok = Tokenizer(TokenizerConfig(n_bins=mcfg.n_bins, a=3.0, std=0.2, frame="body"))
    bins, cond, _ = encode_batch(tok, [(pep.features, torch.from_numpy(xyz))])
    bins, cond = bins.to(device), cond.to(device)
    torch.manual_seed(0)
    model = ArBG(mcfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bf16 = use_bf16(TrainConfig(), device)
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = train_loss(model, bins, cond)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # waits for the device
        times.append(time.perf_counter() - t0)
        if sum(times[1:]) > 3.0:
            break
    return float(np.median(times[1:])) * batch / n


def _probe_sampling(pep, size: str, preset: str, device) -> tuple[float, float]:
    """(proposals/s of an untrained `size` model, reduced energies/s) for this peptide."""
    import torch

    from .energy import EnergyModel
    from .model import ArBG, ModelConfig
    from .sampling import sample
    from .tokenizer import Tokenizer, TokenizerConfig

    n = 512 if device.type == "cuda" else 128
    mcfg = ModelConfig.preset(size)
    tok = Tokenizer(TokenizerConfig(n_bins=mcfg.n_bins, a=3.0, std=0.2, frame="body"))
    torch.manual_seed(0)
    model = ArBG(mcfg).to(device).eval()
    t0 = time.perf_counter()
    xyz, _ = sample(model, tok, pep.features, n, batch_size=n, device=device)
    sample_s = time.perf_counter() - t0
    em = EnergyModel(pep.topology, preset)
    frames = np.repeat(pep.xyz[None], 200, axis=0)  # realistic conformations cost what MD's do
    t0 = time.perf_counter()
    em.reduced_energy(frames)
    return n / sample_s, len(frames) / (time.perf_counter() - t0)


def probe(pep, cfg: FitConfig, device, progress=None) -> Rates:
    """Measure the rates the plan needs on this machine (a few seconds to a minute)."""
    from .cores import usable_cores
    from .md import MDConfig, measure_ns_per_day

    report = progress or (lambda *a: None)
    sizes = (cfg.size,) if cfg.size else SIZE_CANDIDATES
    report("md", 0, len(sizes) + 2)
    md_cfg = MDConfig(ns=1.0, preset=cfg.preset, save_ps=cfg.save_ps, seed=cfg.seed)
    ns_per_day, platform = measure_ns_per_day(pep.topology, pep.xyz, md_cfg)
    batch = cfg.batch_size or (4096 if device.type == "cuda" else 256)
    per_step = {}
    for k, size in enumerate(sizes):
        report(f"train {size}", k + 1, len(sizes) + 2)
        per_step[size] = _probe_train(pep, size, batch, device)
    chosen = choose_size(cfg, per_step)
    report("sampling", len(sizes) + 1, len(sizes) + 2)
    sps, eps = _probe_sampling(pep, chosen, cfg.preset, device)
    report("done", len(sizes) + 2, len(sizes) + 2)
    return Rates(ns_per_day, platform, per_step, sps, eps, str(device), usable_cores(),
                 f"probe on this machine ({time.strftime('%Y-%m-%d %H:%M')}, load "
                 f"{os.getloadavg()[0]:.1f}): MD of this peptide, {len(sizes)} training "
                 f"size(s), {chosen} sampling")


# ------------------------------------------------------------------------------------- plan


def choose_size(cfg: FitConfig, per_step: dict) -> str:
    """The given size, else the largest candidate whose steps reach MIN_STEPS in the training
    share of the budget (else the smallest candidate)."""
    if cfg.size:
        return cfg.size
    train_s = cfg.budget_hours * 3600 * SHARES["train"]
    for size in SIZE_CANDIDATES:
        if size in per_step and train_s / per_step[size] >= MIN_STEPS:
            return size
    return SIZE_CANDIDATES[-1]


def _md_part(cfg: FitConfig, rates: Rates) -> dict:
    replicas = cfg.replicas or max(1, rates.cores // 2)
    parallel = min(rates.cores, 2 * replicas)
    waves = math.ceil(2 * replicas / parallel)  # runs one process after another, per core
    md_s = cfg.budget_hours * 3600 * SHARES["md"]
    budget_ns = (md_s / waves - 10.0) * rates.md_ns_per_day / 86400 - cfg.warmup_ps / 1000
    md_ns = cfg.md_ns or round(max(budget_ns, MIN_MD_FRAMES * cfg.save_ps / 1000), 3)
    hot_ns = cfg.hot_ns or md_ns
    frames = int(round(md_ns * 1000 / cfg.save_ps))
    seconds = waves * ((max(md_ns, hot_ns) + cfg.warmup_ps / 1000) * 86400 / rates.md_ns_per_day
                       + 10.0)  # + start-up and minimization
    return {"replicas": replicas, "parallel": parallel, "md_ns": md_ns, "hot_ns": hot_ns,
            "hot_temperature_k": cfg.hot_temperature_k, "frames_per_replica": frames,
            "train_frames": int(round(TRAIN_FRACTION * frames)), "estimate_s": seconds}


def _train_part(cfg: FitConfig, rates: Rates, device: str) -> dict:
    size = choose_size(cfg, rates.train_s_per_step)
    per_step = rates.train_s_per_step[size]
    overhead = 1.1  # validations and saves
    steps = cfg.steps or max(100, int(cfg.budget_hours * 3600 * SHARES["train"]
                                      / (per_step * overhead)))
    val_every = max(1, min(500, steps // 10))
    batch = cfg.batch_size or (4096 if device == "cuda" else 256)
    return {"size": size, "steps": steps, "batch_size": batch, "optimizer": "muon", "lr": 2e-3,
            "frame": "body", "warmup_steps": min(500, steps // 10), "val_every": val_every,
            # a clock only for budget-sized runs, with slack: the schedule should end first
            "budget_s": None if cfg.steps else 1.25 * cfg.budget_hours * 3600 * SHARES["train"],
            "s_per_step": per_step, "estimate_s": steps * per_step * overhead + 10.0}


def _eval_part(cfg: FitConfig, rates: Rates, md: dict) -> dict:
    # a proposal: drawn, maybe scored again as its mirror image, and its energy
    per_proposal = 1.5 / rates.samples_per_s + 1.0 / rates.energies_per_s
    taus = cfg.tau_values
    affordable = max(cfg.budget_hours * 3600 * SHARES["eval"] - 60.0, 0) / per_proposal
    n_proposals = cfg.n_proposals or int(min(100_000, max(1000, affordable / 2)))
    n_tune = cfg.n_tune or int(min(20_000, max(500, affordable / 2 / len(taus))))
    held_back = md["replicas"] * (md["frames_per_replica"] - md["train_frames"])
    n_eval = cfg.n_eval or max(2, min(10_000, n_proposals, held_back))
    metrics_s = 3e-7 * n_eval ** 2 * 2 + 5.0  # exact OT of n_eval points, noise floor too
    lag = max(1, min(int(round(10.0 / cfg.save_ps)), held_back // 4))
    return {"taus": taus, "n_tune": n_tune, "n_proposals": n_proposals, "n_eval": n_eval,
            "lag_frames": lag, "held_back_frames": held_back,
            "tune_estimate_s": len(taus) * n_tune * per_proposal + 10.0,
            "evaluate_estimate_s": n_proposals * per_proposal + metrics_s + 10.0}


def make_plan(request: dict, cfg: FitConfig, rates: Rates) -> dict:
    """The plan.json of a fit: settings of every stage and its estimated seconds here."""
    device = rates.device.split(":")[0]
    md, train = _md_part(cfg, rates), _train_part(cfg, rates, device)
    ev = _eval_part(cfg, rates, md)
    frames = 2 * md["replicas"] * md["frames_per_replica"]
    stages = {
        "md": (f"{md['replicas']} replica(s) at the preset's temperature x {md['md_ns']} ns and "
               f"{md['replicas']} at {md['hot_temperature_k']:g} K x {md['hot_ns']} ns, "
               f"{md['parallel']} at a time", md["estimate_s"]),
        "data": (f"pack {frames} frames (training: the first {md['train_frames']} of each "
                 "reference replica and all hot frames, 90/10 train/val)", 5.0 + frames * 2e-4),
        "train": (f"{train['size']} model, {train['steps']} steps x {train['batch_size']} frames, "
                  f"Muon, body frame", train["estimate_s"]),
        "tune": (f"tau in {ev['taus']}, {ev['n_tune']} proposals each, on the validation block",
                 ev["tune_estimate_s"]),
        "evaluate": (f"{ev['n_proposals']} proposals vs {ev['held_back_frames']} held-back "
                     f"frames ({ev['n_eval']} compared), noise floors", ev["evaluate_estimate_s"]),
        "model": ("card, weights and reference ensemble -> model/", 5.0),
    }
    total = sum(s for _, s in stages.values())
    budget_s = cfg.budget_hours * 3600
    return {**request, "rates": asdict(rates), "md": md, "train": train, "evaluation": ev,
            "stages": [{"name": k, "what": w, "estimate_s": s} for k, (w, s) in stages.items()],
            "estimate_s": total, "budget_s": budget_s,
            "note": ("the sizes given by flags take longer than the budget"
                     if total > 1.2 * budget_s else "within the budget")
            + ("" if train["steps"] >= MIN_STEPS else
               f"; {train['steps']} training steps: expect a weak model ({MIN_STEPS}+ needed)")}


def describe(plan: dict) -> str:
    """The plan as the CLI prints it."""
    lines = [f"arbg fit {plan['sequence']} ({plan['termini']}) on {plan['rates']['device']}: "
             f"about {_hms(plan['estimate_s'])} (budget {_hms(plan['budget_s'])}; {plan['note']})",
             f"  rates: {plan['rates']['source']}"]
    for k, s in enumerate(plan["stages"], 1):
        lines.append(f"  {k}. {s['name']:9s} {_hms(s['estimate_s']):>9s}  {s['what']}")
    return "\n".join(lines)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def command_line(request: dict) -> str:
    """The `arbg fit` command of a request (flags that differ from their defaults)."""
    import shlex
    from dataclasses import fields

    words = [request["sequence"], "--termini", request["termini"]]
    for f in fields(FitConfig):
        value = request["config"].get(f.name, f.default)  # nproc is not in a request
        if value != f.default:
            words += [flag_of(f.name), str(value)]
    return "arbg fit " + shlex.join(words) + " --out DIR"


def flag_of(name: str) -> str:
    """The `arbg fit` flag of a FitConfig field."""
    return RENAMED.get(name, "--" + name.replace("_", "-"))
