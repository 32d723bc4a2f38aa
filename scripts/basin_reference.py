"""Reference population of the alphaL / C7ax basin (0 < phi < 120 deg) from MD at several
temperatures, each reweighted exactly to the preset temperature, with block errors.

Plain MD at 300 K may never cross into a basin that holds ~1 % of the ensemble (alanine
dipeptide in implicit solvent: no entry in 200 ns here); hotter runs cross often, and weights
exp(-(1 - T/T_run) u) take their frames back to the preset temperature T.

    python scripts/basin_reference.py --md data/ala2_t300 data/ala2_t400 data/ala2_t500 \
        --name ala2 [--blocks 10] [--card assets/models/ala2/card.json]

Writes results/basin_reference_NAME.json; with --card, also stores it in that model card under
evaluation.phi_positive_basin_reference_md. The reference is a property of the MD, not of a
model: a retrained model's card takes the stored one without the MD at hand,

    python scripts/basin_reference.py --from results/basin_reference_ala2.json \
        --card assets/models/ala2/card.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from arbg_core.energy import EnergyModel, get_preset
from arbg_core.files import read_json, write_json
from arbg_core.md import load_run, run_meta
from arbg_core.metrics import ramachandran_angles
from arbg_core.report import alpha_l, alpha_l_entries, phi_basin_population, temperature_weights

ROOT = Path(__file__).resolve().parent.parent  # the checkout this script belongs to


def run_row(folder: Path, n_blocks: int) -> dict:
    """One `arbg md` folder: its basin population at the preset temperature, with errors."""
    meta = run_meta(folder)
    t_run, preset_name, save_ps = (float(meta["temperature_k"]), meta["config"]["preset"],
                                   float(meta["config"]["save_ps"]))
    traj = load_run(folder)
    preset = get_preset(preset_name)
    u = EnergyModel(traj.topology, preset_name).reduced_energy(traj.xyz)
    w = temperature_weights(u, t_run, preset.temperature_k)
    phi, _, _ = ramachandran_angles(traj)
    pop = phi_basin_population(phi, None if t_run == preset.temperature_k else w, n_blocks=n_blocks)
    row = {"md": str(folder), "temperature_k": t_run, "preset": preset_name,
           "frames": int(traj.n_frames), "ns": traj.n_frames * save_ps / 1000.0,
           "frames_in_basin": int(alpha_l(phi[:, 0]).sum()),
           "entries": alpha_l_entries(phi[:, 0]), **pop}
    print(f"{folder} ({t_run:g} K, {traj.n_frames} frames): p = {100 * pop['p_alpha_l']:.2f} "
          f"± {100 * pop['stderr']:.2f} % at {preset.temperature_k:g} K "
          f"(n_eff {pop['n_effective']:.0f}, {row['entries']} entries)")
    return row


def combine(rows: list[dict]) -> dict | None:
    """Inverse-variance combination of the runs that entered the basin at all."""
    usable = [r for r in rows if r["entries"] > 0]
    if not usable:
        return None
    iv = np.array([1.0 / r["stderr"] ** 2 for r in usable])
    p_c = float(np.sum(iv * [r["p_alpha_l"] for r in usable]) / iv.sum())
    print(f"combined: {100 * p_c:.2f} ± {100 * float(1.0 / np.sqrt(iv.sum())):.2f} %")
    return {"p_alpha_l": p_c, "stderr": float(1.0 / np.sqrt(iv.sum())),
            "runs": [r["md"] for r in usable]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--md", nargs="+", help="`arbg md` folders (any temperature)")
    p.add_argument("--name")
    p.add_argument("--blocks", type=int, default=10)
    p.add_argument("--card", help="model card to store the result in")
    p.add_argument("--from", dest="stored", metavar="JSON",
                   help="a result this script wrote before: store it in --card, run nothing")
    a = p.parse_args(argv)
    if a.stored:
        if not a.card or a.md:
            p.error("--from takes --card and no --md")
        store(a.card, read_json(a.stored))
        print(f"{a.stored} -> {a.card}")
        return
    if not (a.md and a.name):
        p.error("--md and --name are required (or --from JSON --card CARD)")

    rows = [run_row(folder, a.blocks) for folder in map(Path, a.md)]
    presets = sorted({r.pop("preset") for r in rows})
    if len(presets) != 1:
        raise SystemExit(f"runs of different force fields: {presets}")
    result = {"name": a.name, "basin": "alphaL / C7ax, 0 < phi < 120 deg (first residue with phi)",
              "preset": presets[0], "runs": rows, "combined": combine(rows),
              "method": "each run's frames reweighted by exp(-(1 - T/T_run) u) to the preset "
                        f"temperature; errors: max(Kish, spread of {a.blocks} time blocks)",
              "command": "python " + " ".join(["scripts/basin_reference.py"] +
                                               (argv if argv is not None else sys.argv[1:]))}
    out = write_json(ROOT / "results" / f"basin_reference_{a.name}.json", result)
    if a.card:
        store(a.card, result)
    print(f"-> {out}")


def store(card_path: str, result: dict) -> None:
    card = read_json(card_path)
    card.setdefault("evaluation", {})["phi_positive_basin_reference_md"] = result
    write_json(card_path, card)


if __name__ == "__main__":
    main()
