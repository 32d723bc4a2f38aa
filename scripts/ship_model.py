"""Turn a trained checkpoint into a shipped model: tune tau on validation MD, evaluate on test MD,
write the card, and ship a thinned test ensemble for the app.

    python scripts/ship_model.py --checkpoint runs/ala2/best --md data/ala2_t300 \
        --train-frames 22000 --name ala2 [--taus 0.9,0.95,1.0,1.05,1.1] [--n-tune 20000] \
        [--n-proposals 100000] [--n-eval 10000] [--training-summary runs/ala2/summary.json]

Frames [0, train_frames) of each replica of the preset-temperature run were seen in training
(the last 10 % of them as the validation block); tau is tuned on the validation blocks and the
card's metrics come from the frames after them, which the model never saw. Writes assets/models/NAME/ and
assets/reference/NAME.npz (at most 10,000 test frames, evenly strided in time).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arbg_core import checkpoint  # noqa: E402
from arbg_core.data import load_source, save_reference  # noqa: E402
from arbg_core.energy import EnergyModel  # noqa: E402
from arbg_core.md import run_meta  # noqa: E402
from arbg_core.metrics import e_w2  # noqa: E402
from arbg_core.peptide import build  # noqa: E402
from arbg_core.pipeline import SampleConfig, run_sampling, versions  # noqa: E402
from arbg_core.report import evaluate  # noqa: E402


def split_replicas(replicas, train_frames: int):
    """Per replica: validation = the last 10 % of its first `train_frames` frames, test = the rest."""
    import mdtraj as md

    n_val0 = int(round(0.9 * train_frames))
    test = [r[train_frames:] for r in replicas if r.n_frames > train_frames]
    if not test:
        raise ValueError(f"no replica of the MD run has more than {train_frames} frames: nothing to test on")
    val = [r[n_val0:train_frames] for r in replicas]
    return (md.join(val, check_topology=True, discard_overlapping_frames=False),
            md.join(test, check_topology=True, discard_overlapping_frames=False))


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--md", required=True, help="arbg md folder of the preset-temperature run")
    p.add_argument("--train-frames", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--taus", default="0.9,0.95,1.0,1.05,1.1")
    p.add_argument("--n-tune", type=int, default=20_000)
    p.add_argument("--n-proposals", type=int, default=100_000)
    p.add_argument("--n-eval", type=int, default=10_000)
    p.add_argument("--lag", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--training-summary")
    p.add_argument("--notes", default="")
    p.add_argument("--tune-only", action="store_true", help="write results/tau_NAME.json and stop")
    p.add_argument("--tuning", help="tau tuning JSON from an earlier --tune-only run")
    a = p.parse_args(argv)

    loaded = checkpoint.load(a.checkpoint)
    system = loaded.config["system"]
    pep = build(system["sequence"], system["termini"])
    em = EnergyModel(pep.topology, system["preset"])
    val, test = split_replicas(load_source(a.md), a.train_frames)
    log(f"validation frames {val.n_frames}, test frames {test.n_frames}")
    u_val = em.reduced_energy(val.xyz)

    tuning = json.loads(Path(a.tuning).read_text()) if a.tuning else []
    for tau in ([] if a.tuning else (float(t) for t in a.taus.split(","))):
        res = run_sampling(loaded, pep, SampleConfig(n=a.n_tune, tau=tau, seed=a.seed + 1,
                                                     batch_size=a.batch_size), energy_model=em)
        ens = res.ensemble
        live = np.isfinite(ens.u) & (ens.weights > 0)
        score = e_w2(u_val, ens.u[live], w_model=ens.weights[live])
        tuning.append({"tau": tau, "reweighted_e_w2_val": score, "ess_fraction": ens.ess_fraction})
        log(f"tau {tau}: val E-W2 {score:.3f}, ESS {100 * ens.ess_fraction:.2f}%")
    best_tau = min(tuning, key=lambda r: r["reweighted_e_w2_val"])["tau"]
    if a.tune_only:
        out = ROOT / "results" / f"tau_{a.name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(tuning, indent=2))
        log(f"best tau {best_tau}; tuning -> {out}")
        return

    t0 = time.perf_counter()
    result = run_sampling(loaded, pep, SampleConfig(n=a.n_proposals, tau=best_tau, seed=a.seed,
                                                    batch_size=a.batch_size), energy_model=em)
    sample_s = time.perf_counter() - t0
    out_eval = ROOT / "results" / f"ship_{a.name}"
    report = evaluate(result, test, out_eval, lag=a.lag, n_eval=a.n_eval, seed=a.seed,
                      energy_model=em).report
    log(f"test: {json.dumps(report['metrics'])}")

    dest = checkpoint.copy_weights(a.checkpoint, ROOT / "assets" / "models" / a.name)
    train_card = loaded.card
    md_meta = run_meta(a.md)
    training = json.loads(Path(a.training_summary).read_text()) if a.training_summary else {}
    training.pop("history", None)
    s = report["sampling"]
    card = {
        "name": a.name, "system": system, "tau": best_tau,
        "description": f"Per-system ArBG for {pep.name} ({pep.n_atoms} atoms)",
        "training": {"steps": train_card.get("steps"), "val_nll": train_card.get("val_nll"),
                     "wall_time_s": train_card.get("wall_time_s"), "data": train_card.get("data"),
                     **{k: training.get(k) for k in ("device", "tokens_per_s", "params", "bf16")}},
        "md_reference": {"folder": a.md, **md_meta},
        "tau_tuning": tuning,
        "evaluation": {"split": f"frames {a.train_frames}.. of each replica of the MD run "
                                f"({test.n_frames} frames, never seen in training)",
                       "n_proposals": a.n_proposals, "n_eval": a.n_eval,
                       "metrics": report["metrics"], "ess": s.get("ess"),
                       "ess_fraction": s.get("ess_fraction"), "counts": s.get("counts"),
                       "phi_positive_basin": report["phi_positive_basin"],
                       "reference_alpha_l_entries": report["reference"]["alpha_l_entries"],
                       "sampling_wall_time_s": sample_s, "machine": "2-core CPU, no GPU"},
        "commands": {"reproduce": "python " + " ".join(["scripts/ship_model.py"] + (argv or sys.argv[1:]))},
        "versions": versions(), "notes": a.notes,
    }
    (dest / "card.json").write_text(json.dumps(card, indent=2, default=float))

    ref_dir = ROOT / "assets" / "reference"
    ref_dir.mkdir(parents=True, exist_ok=True)
    save_reference(ref_dir / f"{a.name}.npz", test, pep.features, 10_000,
                   {"system": system, "source": a.md, "frames": f"{a.train_frames}.. of each replica",
                    "save_ps": md_meta["config"]["save_ps"]})
    log(f"shipped {dest} and {ref_dir / (a.name + '.npz')}")


if __name__ == "__main__":
    main()
