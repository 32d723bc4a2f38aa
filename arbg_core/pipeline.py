"""One run from a loaded model to a reweighted ensemble: sample -> energies -> weights.

The CLI (`arbg sample`, `arbg evaluate`) and the app call `run_sampling` and render its
`SampleResult`; `write_outputs` gives the on-disk format of DESIGN §14. Progress goes through
`progress(stage, done, total)` with stage in "sample" | "mirror" | "energy" | "reweight".
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__
from .checks import FRACTION, POSITIVE_INT, SEED, TAU, Range, SettingError, check, optional
from .checkpoint import LoadedModel
from .energy import EnergyModel
from .files import write_json
from .flags import option
from .peptide import Peptide
from .reweight import INVERTED, ReweightedEnsemble, chiral_centers, handedness, reweight
from .sampling import check_ready, log_prob, model_device, resolve_device, sample

Progress = Callable[[str, int, int], None]


METHODS = ("snis", "smc")
MIRROR_CHUNK = 256  # mirror images scored between two progress reports
SMC_SCHEDULES = ("constant", "linear")


@dataclass(frozen=True)
class SampleConfig:
    n: int = option(1000, "number of proposals drawn")
    batch_size: int = option(1024, "proposals generated together (one KV cache)")
    tau: float | None = option(None, "sampling temperature tau (default: the model card's tuned tau)")
    seed: int = option(0, "random seed: the same seed on the same device gives the same samples")
    device: str = option("auto", "auto: where the model is loaded (CUDA when present)",
                       choices=("auto", "cpu", "cuda"))
    use_kv_cache: bool = option(True, "re-encode the prefix for every token (benchmarks only)")
    method: str = option("snis", "importance sampling (snis) or twisted SMC over residues (smc)",
                       choices=METHODS)
    reweight: bool = option(True, "skip energies and weights")
    clip_fraction: float = option(0.002, "largest fraction of log weights dropped")
    inverted: str = option("auto", "samples with every chiral center inverted: mirror them and "
                         "weight every sample by q(y) + q(-y) (one more model pass), drop them "
                         "(weight 0; exact too), or auto: drop when under 1 %% of the samples are "
                         "inverted", choices=INVERTED)
    energy_chunk: int = option(500, "frames per energy evaluation call")
    smc_threshold: float = option(0.5, "SMC: resample when the normalized ESS falls below this "
                                "(0: never)")
    smc_schedule: str | tuple[float, ...] = option(
        "constant", "SMC twist exp(-lambda_r u_r): lambda_r = 1 (constant) or r/R (linear)",
        choices=SMC_SCHEDULES)

    def __post_init__(self):
        check(self, n=POSITIVE_INT, batch_size=POSITIVE_INT, tau=optional(TAU), seed=SEED,
              clip_fraction=Range(float, 0, 1, hi_open=True), energy_chunk=POSITIVE_INT,
              smc_threshold=FRACTION)
        if self.method not in METHODS:
            raise SettingError("method", f"{self.method!r} is an unknown sampling method; choose "
                               f"{' or '.join(METHODS)}")
        if self.inverted not in INVERTED:
            raise SettingError("inverted", f"{self.inverted!r} is not one of {', '.join(INVERTED)}")
        if self.method == "smc" and not self.reweight:
            raise SettingError("reweight", "cannot be off for SMC: it weights particles as it "
                               "grows them and cannot run without energies", joint=True)


def output_bytes(n: int, n_atoms: int) -> int:
    """About the disk space `write_outputs` needs for n samples (DCD + npz + text)."""
    return n * (12 * n_atoms + 64) + 2**20


@dataclass
class SampleResult:
    peptide: Peptide
    config: SampleConfig
    tau: float
    preset: str
    device: str
    model_name: str
    xyz: np.ndarray  # (n, A, 3) float32 nm as drawn
    log_q: np.ndarray  # (n,) float64
    ensemble: ReweightedEnsemble | None
    timings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        out = {"sequence": self.peptide.sequence, "termini": self.peptide.termini,
               "n_atoms": self.peptide.n_atoms, "model": self.model_name, "preset": self.preset,
               "tau": self.tau, "device": self.device, "config": asdict(self.config),
               "timings_s": self.timings, "histidine_states": list(self.peptide.histidine_states),
               "versions": versions()}
        if self.ensemble is not None:
            out.update(self.ensemble.summary())
        return out


def versions() -> dict:
    import openmm
    import torch

    return {"arbg": __version__, "torch": torch.__version__, "openmm": openmm.__version__,
            "python": platform.python_version()}


def run_sampling(loaded: LoadedModel, pep: Peptide, cfg: SampleConfig = SampleConfig(),
                 progress: Progress | None = None, energy_model: EnergyModel | None = None) -> SampleResult:
    """Draw `cfg.n` proposals from the model and (optionally) reweight them to exp(-u)."""
    tau = float(cfg.tau) if cfg.tau is not None else loaded.card.default_tau
    if TAU.problem(tau):  # the card's tau (the config checked its own)
        raise ValueError(f"temperature tau={tau} is outside the sensible range 0.05..5")
    # auto: where the model was loaded; anything else must match it (models are never moved)
    device = model_device(loaded.model) if cfg.device == "auto" else resolve_device(cfg.device)
    check_ready(loaded.model, device)
    preset = loaded.config.preset
    timings = {}
    report = progress or (lambda *a: None)

    if cfg.method == "smc":
        em = energy_model or EnergyModel(pep.topology, preset)
        xyz, log_q, ensemble = _run_smc(loaded, pep, cfg, tau, device, em, report, timings)
        return SampleResult(pep, cfg, tau, preset, str(device), loaded.name, xyz, log_q,
                            ensemble, timings)
    t0 = time.perf_counter()
    xyz, log_q = sample(loaded.model, loaded.tokenizer, pep.features, cfg.n, tau=tau, seed=cfg.seed,
                        batch_size=cfg.batch_size, device=device, use_kv_cache=cfg.use_kv_cache,
                        progress=lambda done, total: report("sample", done * cfg.n // max(total, 1), cfg.n))
    timings["sample"] = time.perf_counter() - t0
    ensemble = None
    if cfg.reweight:
        em = energy_model or EnergyModel(pep.topology, preset)

        def energy_fn(frames):
            out = np.empty(len(frames))
            for i in range(0, len(frames), cfg.energy_chunk):
                out[i:i + cfg.energy_chunk] = em.reduced_energy(frames[i:i + cfg.energy_chunk])
                report("energy", min(i + cfg.energy_chunk, len(frames)), len(frames))
            return out

        def log_q_fn(frames):  # the mirror images, MIRROR_CHUNK at a time so progress shows
            out = []
            for i in range(0, len(frames), MIRROR_CHUNK):
                out.append(log_prob(loaded.model, loaded.tokenizer, pep.features,
                                    frames[i:i + MIRROR_CHUNK], tau=tau,
                                    batch_size=cfg.batch_size, device=device, center=False))
                report("mirror", min(i + MIRROR_CHUNK, len(frames)), len(frames))
            return np.concatenate(out) if out else np.zeros(0)

        centers = chiral_centers(pep.topology)
        signs = handedness(pep.xyz[None], centers)[0]
        t0 = time.perf_counter()
        ensemble = reweight(xyz, log_q, energy_fn, log_q_fn=log_q_fn, centers=centers,
                            reference_signs=signs, clip_fraction=cfg.clip_fraction,
                            inverted=cfg.inverted)
        timings["energy_and_reweight"] = time.perf_counter() - t0
        report("reweight", 1, 1)
    return SampleResult(pep, cfg, tau, preset, str(device), loaded.name, xyz, log_q, ensemble,
                        timings)


def _run_smc(loaded, pep, cfg, tau, device, em, report, timings):
    """Twisted SMC (smc.py) in independent populations of cfg.batch_size particles (one KV cache
    each), combined by their Z_hat. Returns the final particles as drawn, their log q, ensemble."""
    import torch

    from .sampling import BlockProposal
    from .smc import smc_population, to_ensemble

    centers = chiral_centers(pep.topology)
    signs = handedness(pep.xyz[None], centers)[0]
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    R = len(pep.residue_blocks)
    t0 = time.perf_counter()
    pops = []
    for first in range(0, cfg.n, cfg.batch_size):
        k = min(cfg.batch_size, cfg.n - first)
        proposal = BlockProposal(loaded.model, loaded.tokenizer, pep.features, k,
                                 pep.residue_blocks, tau=tau, generator=generator, device=device)

        def progress(stage, r, _R, first=first, k=k):
            report(stage, first + k * r // R, cfg.n)

        pops.append(smc_population(proposal, em.partial_energy, em.reduced_energy, R,
                                   threshold=cfg.smc_threshold, schedule=cfg.smc_schedule, rng=rng,
                                   centers=centers, reference_signs=signs, progress=progress))
    ensemble = to_ensemble(pops, cfg.clip_fraction)
    timings["sample"] = ensemble.extras["time_generation_s"]
    timings["energy_and_reweight"] = time.perf_counter() - t0 - timings["sample"]
    report("reweight", 1, 1)
    xyz = np.concatenate([p.xyz_drawn for p in pops])
    return xyz, ensemble.log_q, ensemble


def write_outputs(result: SampleResult, out_dir: str | Path) -> dict:
    """topology.pdb, samples.dcd (all proposals, after the chirality fix), samples.npz and
    summary.json, into `out_dir` (the CLI writes into a `files.output_folder`, which puts the
    folder in place whole)."""
    import mdtraj as md

    from .trajectories import save_dcd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    top = result.peptide.topology
    md.Trajectory(result.peptide.xyz[None], top).save_pdb(str(out / "topology.pdb"))
    ens = result.ensemble
    xyz = ens.xyz if ens is not None else result.xyz
    save_dcd(np.nan_to_num(xyz, nan=0.0), top, out / "samples.dcd")
    arrays = {"log_q": result.log_q}
    if ens is not None:
        arrays.update(u=ens.u, log_w=ens.log_w, weights=ens.weights, status=ens.status,
                      log_q_used=ens.log_q)
    np.savez(out / "samples.npz", **arrays)
    summary = result.summary()
    write_json(out / "summary.json", summary)
    return summary
