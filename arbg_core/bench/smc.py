"""Twisted SMC vs SNIS at equal generation budget (same number of generated tokens).

On a shipped model (default: the capped tri-alanine one if present, else alanine dipeptide),
5 seeds each: ESS fraction, E-W2 and T-W2 of the reweighted ensemble against the shipped test
ensemble, and the fraction of SMC wall time spent in (partial) energies.
Usage: python -m arbg_core.bench.smc [--out results] [--model NAME] [--n 4096] [--seeds 5]
"""

from __future__ import annotations

import time

import numpy as np

from . import BenchmarkUnavailable
from .common import cli, write


def _default_model() -> str:
    from arbg_core import checkpoint

    shipped = {entry.name for entry in checkpoint.list_shipped()}
    for name in ("aaa", "ala2"):
        if name in shipped:
            return name
    raise BenchmarkUnavailable("neither shipped model aaa nor ala2 is installed: ship one first")


def run(out_dir: str = "results", model: str | None = None, n: int = 4096, seeds: int = 5,
        batch_size: int = 1024) -> dict:
    from arbg_core import checkpoint
    from arbg_core.energy import EnergyModel
    from arbg_core.metrics import e_w2, t_w2, backbone_torsions
    from arbg_core.peptide import build
    from arbg_core.pipeline import SampleConfig, run_sampling
    from arbg_core.report import load_reference
    import mdtraj as md

    name = model or _default_model()
    loaded = checkpoint.load(checkpoint.resolve(name))
    system = loaded.config.system
    pep = build(system.sequence, system.termini)
    em = EnergyModel(pep.topology, system.preset)
    # the shipped test ensemble beside the shipped models (assets/reference/NAME.npz)
    ref = load_reference(checkpoint.SHIPPED_DIR.parent / "reference" / f"{name}.npz")
    u_ref = em.reduced_energy(ref.xyz)
    ang_ref = np.concatenate(backbone_torsions(ref), axis=1)
    rows = []
    variants = {"snis": ("snis", "constant"), "smc": ("smc", "constant"),
                "smc-linear": ("smc", "linear")}
    for label, (method, schedule) in variants.items():
        for seed in range(seeds):
            t0 = time.perf_counter()
            res = run_sampling(loaded, pep, SampleConfig(n=n, seed=seed, method=method,
                                                         smc_schedule=schedule,
                                                         batch_size=batch_size), energy_model=em)
            wall = time.perf_counter() - t0
            ens = res.ensemble
            idx = ens.resample(min(n, 4000), seed=seed)
            traj = md.Trajectory(ens.xyz[idx], pep.topology)
            live = np.isfinite(ens.u) & (ens.weights > 0)
            row = {"method": label, "seed": seed, "ess_fraction": ens.ess_fraction,
                   "e_w2": e_w2(u_ref, ens.u[live], w_model=ens.weights[live]),
                   "t_w2": t_w2(ang_ref, np.concatenate(backbone_torsions(traj), axis=1),
                                max_points=4000, seed=seed),
                   "wall_s": wall}
            if method == "smc":  # both twist schedules
                ex = ens.extras
                row["energy_time_fraction"] = ex.get("time_energy_s", 0.0) / wall
                row["n_resamples"] = ex.get("n_resamples")
                row["model_evaluations"] = ex.get("n_model_evaluations")
            rows.append(row)
            print(row, flush=True)
    summary = {}
    for method in variants:
        sel = [r for r in rows if r["method"] == method]
        summary[method] = {k: {"mean": float(np.mean([r[k] for r in sel])),
                               "std": float(np.std([r[k] for r in sel], ddof=1))}
                           for k in ("ess_fraction", "e_w2", "t_w2", "wall_s")
                           + (("energy_time_fraction",) if method != "snis" else ())}
    result = {"model": name, "n_per_run": n, "seeds": seeds, "batch_size": batch_size,
              "budget": f"{n} x {3 * pep.n_atoms} generated tokens per run, both methods",
              "rows": rows, "summary": summary}
    write(out_dir, "smc", result)
    return result


if __name__ == "__main__":
    cli(run, __doc__, show=lambda result: print(result["summary"]))
