"""End to end: effective samples per second of ArBG against OpenMM MD on the same machine.

ArBG: the shipped alanine-dipeptide model draws N proposals on the CPU and reweights them
(generation + energies + mirror scoring + weights); its effective samples are the Kish ESS.
MD: the project's own `arbg md` protocol (1 fs Langevin, a frame per ps, one thread) for a short
run; its effective samples are n_frames / (2 tau_int), tau_int the integrated autocorrelation
time (Sokal's window, c = 5) of the slowest of cos/sin of the backbone torsions. Plain 300 K MD
of this length never crosses into the alphaL basin, which its tau_int cannot see: the MD figure
is an optimistic bound.
Usage: python -m arbg_core.bench.e2e [--out results] [--n 5000] [--md-ns 2]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from .common import cli, write


def run(out_dir: str = "results", n: int = 5000, md_ns: float = 2.0) -> dict:
    from arbg_core import checkpoint
    from arbg_core.md import MDConfig, load_run, run_md
    from arbg_core.metrics import backbone_torsions, integrated_autocorrelation_time
    from arbg_core.peptide import build
    from arbg_core.pipeline import SampleConfig, run_sampling
    from arbg_core.report import alpha_l

    pep = build("A", "capped")
    loaded = checkpoint.load(checkpoint.resolve("ala2"))
    run_sampling(loaded, pep, SampleConfig(n=64, batch_size=64, seed=1, device="cpu"))  # warm-up
    t0 = time.perf_counter()
    result = run_sampling(loaded, pep, SampleConfig(n=n, batch_size=256, seed=0, device="cpu"))
    arbg_s = time.perf_counter() - t0
    ess = result.ensemble.ess

    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = MDConfig(ns=md_ns, warmup_ps=10.0, chunk_frames=100, seed=3)
        t0 = time.perf_counter()
        run_md(pep.topology, pep.xyz, Path(tmp) / "md", cfg,
               lambda done, total, ns_day: rates.append(ns_day) if ns_day else None)
        md_s = time.perf_counter() - t0
        traj = load_run(Path(tmp) / "md")
    phi, psi = backbone_torsions(traj)
    series = {f"{f}({name}{k})": fn(angles[:, k]) for name, angles in (("phi", phi), ("psi", psi))
              for k in range(angles.shape[1]) for f, fn in (("cos", np.cos), ("sin", np.sin))}
    taus = {k: integrated_autocorrelation_time(v) for k, v in series.items()}
    slowest = max(taus, key=taus.get)
    md_eff = traj.n_frames / (2 * taus[slowest])
    ns_per_day = float(np.median(rates))
    md_eff_per_s = md_eff / (md_ns * 86400.0 / ns_per_day)  # per second of integration

    out = {"system": "ACE-ALA-NME (shipped ala2 model)", "n_proposals": n,
           "arbg": {"wall_s": arbg_s, "ess": ess, "ess_fraction": result.ensemble.ess_fraction,
                    "ess_per_s": ess / arbg_s, "timings_s": result.timings},
           "md": {"ns": md_ns, "frames": int(traj.n_frames), "ns_per_day": ns_per_day,
                  "wall_s_incl_setup": md_s, "tau_int_frames": taus, "slowest": slowest,
                  "effective_samples": md_eff, "ess_per_s": md_eff_per_s,
                  "alpha_l_frames": int(alpha_l(phi[:, 0]).sum())},
           "arbg_over_md": (ess / arbg_s) / md_eff_per_s,
           "note": "MD on one thread; ArBG with torch's default threads. MD's tau_int misses the "
                   "alphaL basin it never visits, so its figure is an upper bound."}
    print(f"ArBG {ess / arbg_s:.2f} effective samples/s (ESS {ess:.0f} of {n} in {arbg_s:.1f} s); "
          f"MD {md_eff_per_s:.2f}/s ({ns_per_day:.0f} ns/day, tau_int {taus[slowest]:.1f} ps of "
          f"{slowest}); ratio {out['arbg_over_md']:.2f}")
    write(out_dir, "e2e_cpu", out)
    return out


if __name__ == "__main__":
    cli(run, __doc__, show=lambda result: None)  # run prints its line
