"""Twisted SMC vs SNIS at equal generation budget (same number of generated tokens).

On a shipped model (default: the capped tri-alanine one if present, else alanine dipeptide),
5 seeds each: ESS fraction, E-W2 and T-W2 of the reweighted ensemble against the shipped test
ensemble, and the fraction of SMC wall time spent in (partial) energies.
Usage: python bench/smc.py [--out results] [--model NAME] [--n 4096] [--seeds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _default_model():
    for name in ("aaa", "ala2"):
        if (ROOT / "assets" / "models" / name).exists():
            return name
    raise SystemExit("no shipped model under assets/models: train and ship one first")


def run(out_dir="results", model=None, n=4096, seeds=5, batch_size=1024) -> dict:
    from arbg_core import checkpoint
    from arbg_core.energy import EnergyModel
    from arbg_core.metrics import e_w2, t_w2, backbone_torsions
    from arbg_core.peptide import build
    from arbg_core.pipeline import SampleConfig, run_sampling
    from arbg_core.report import load_reference
    import mdtraj as md

    name = model or _default_model()
    loaded = checkpoint.load(checkpoint.resolve(name))
    system = loaded.config["system"]
    pep = build(system["sequence"], system["termini"])
    em = EnergyModel(pep.topology, system["preset"])
    ref = load_reference(ROOT / "assets" / "reference" / f"{name}.npz")
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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results")
    p.add_argument("--model")
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--seeds", type=int, default=5)
    a = p.parse_args()
    print(run(a.out, a.model, a.n, a.seeds)["summary"])
