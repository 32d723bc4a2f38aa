"""Energies and MD speed per system, preset and OpenMM platform (the foundation's figures).

Single-point reduced energies/s and MD ns/day for capped A (alanine dipeptide), zwitterionic
AAAAAA and chignolin (GYDPETGTWG), on the Reference and CPU platforms, both presets.
Usage: python -m arbg_core.bench.energy [--out results] [--md-steps 5000]
"""

from __future__ import annotations

import time

import numpy as np

from .common import cli, write

SYSTEMS = [("A", "capped"), ("AAAAAA", "zwitterionic"), ("GYDPETGTWG", "zwitterionic")]


def md_ns_per_day(system, xyz, platform_name, temperature_k, steps) -> float:
    import openmm
    import openmm.unit as unit

    integrator = openmm.LangevinMiddleIntegrator(temperature_k * unit.kelvin, 1 / unit.picosecond,
                                                 1 * unit.femtosecond)
    props = {"Threads": "1"} if platform_name == "CPU" else {}
    ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform_name), props)
    ctx.setPositions(xyz)
    openmm.LocalEnergyMinimizer.minimize(ctx, 1.0, 200)
    integrator.step(100)
    t0 = time.perf_counter()
    integrator.step(steps)
    ctx.getState(getEnergy=True)
    return steps * 1e-6 / (time.perf_counter() - t0) * 86400.0


def run(out_dir: str = "results", md_steps: int = 5000, n_energies: int = 500) -> dict:
    from arbg_core import peptide
    from arbg_core.energy import PRESETS, EnergyModel

    rows = []
    for seq, termini in SYSTEMS:
        pep = peptide.build(seq, termini)
        rng = np.random.default_rng(0)
        frames = pep.xyz[None] + rng.normal(0, 0.005, (n_energies, pep.n_atoms, 3))
        for preset in PRESETS:
            for platform_name in ("Reference", "CPU"):
                em = EnergyModel(pep.topology, preset, platform=platform_name)
                em.reduced_energy(frames[:5])
                t0 = time.perf_counter()
                em.reduced_energy(frames)
                eps = n_energies / (time.perf_counter() - t0)
                nsd = md_ns_per_day(em.system, pep.xyz.astype(float), platform_name,
                                    PRESETS[preset].temperature_k, md_steps)
                rows.append({"system": peptide.system_name(seq, termini), "atoms": pep.n_atoms,
                             "preset": preset, "platform": platform_name + " (1 thread)",
                             "energies_per_s": eps, "md_ns_per_day": nsd})
    result = {"rows": rows, "md_steps": md_steps, "n_energies": n_energies}
    write(out_dir, "energy", result)
    return result


def _show(result: dict) -> None:
    for row in result["rows"]:
        print(f"{row['system']:14s} {row['atoms']:4d} {row['preset']:18s} {row['platform']:22s} "
              f"{row['energies_per_s']:9.0f} energies/s {row['md_ns_per_day']:8.0f} ns/day")


if __name__ == "__main__":
    cli(run, __doc__, show=_show)
