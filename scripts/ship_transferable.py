"""Turn a trained transferable checkpoint into a shipped model: tune tau on the validation
sequences, evaluate zero-shot on the test sequences, write the card, ship thinned test ensembles.

    python scripts/ship_transferable.py --checkpoint runs/dipeptides/best \
        --md data/dipeptides_md --name dipeptides [--taus 0.8,0.9,1.0] [--n-tune 10000] \
        [--n-proposals 100000] [--n-eval 10000] [--ref-frames 2000] \
        [--training-summary runs/dipeptides/summary.json]

Roles come from the MD folder's manifest (the sequence list): tau minimizes the mean reweighted
E-W2 over the `val` sequences (all their MD frames); the card's metrics are those of the `test`
sequences, which the model never saw (all their MD frames as reference). Writes
DEST/assets/models/NAME/, DEST/assets/reference/NAME/SEQ-zw.npz (at most --ref-frames frames
each, evenly strided in time, for the app) and DEST/results/ship_NAME/ (reports and figures).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arbg_core import checkpoint  # noqa: E402
from arbg_core.data import RESERVED, save_reference  # noqa: E402
from arbg_core.energy import EnergyModel  # noqa: E402
from arbg_core.metrics import e_w2  # noqa: E402
from arbg_core.peptide import build, system_name  # noqa: E402
from arbg_core.pipeline import SampleConfig, run_sampling, versions  # noqa: E402
from arbg_core.report import evaluate, load_reference  # noqa: E402

METRICS = ("e_w2", "t_w2", "tica_w2")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sequences_by_role(md_root: Path, manifest: dict) -> dict[str, list[str]]:
    """{role: [sequence]} of the finished runs in an `arbg md --sequences` folder."""
    roles = manifest.get("roles") or {}
    out = {"train": [], "val": [], "test": []}
    for seq in manifest["sequences"]:
        if seq.upper() in RESERVED:
            raise ValueError(f"{md_root} holds the reserved sequence {seq}: it is for external "
                             "evaluation only")
        state = md_root / seq / "state.json"
        if state.is_file() and json.loads(state.read_text())["frames_done"] > 0:
            out.setdefault(roles.get(seq, "train"), []).append(seq)
    return out


def mean_table(rows: list[dict]) -> dict:
    """Mean (and standard deviation) over sequences of every metric of the per-sequence rows."""
    out = {}
    for key in rows[0]:
        if key == "sequence":
            continue
        vals = np.array([r[key] for r in rows], float)
        out[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--md", required=True, help="`arbg md --sequences` folder of the corpus")
    p.add_argument("--name", required=True)
    p.add_argument("--taus", default="0.8,0.9,1.0")
    p.add_argument("--n-tune", type=int, default=10_000, help="proposals per val sequence and tau")
    p.add_argument("--n-proposals", type=int, default=100_000, help="proposals per test sequence")
    p.add_argument("--n-eval", type=int, default=10_000)
    p.add_argument("--ref-frames", type=int, default=2_000, help="frames per shipped test ensemble")
    p.add_argument("--lag", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--training-summary")
    p.add_argument("--dest", default=str(ROOT), help="root of assets/ and results/ (the repo)")
    p.add_argument("--notes", default="")
    a = p.parse_args(argv)

    md_root, dest = Path(a.md), Path(a.dest)
    loaded = checkpoint.load(a.checkpoint)
    if not loaded.config.get("transferable"):
        raise SystemExit(f"{a.checkpoint} is a single-system model: use scripts/ship_model.py")
    manifest = json.loads((md_root / "manifest.json").read_text())
    termini = manifest["termini"]
    roles = sequences_by_role(md_root, manifest)
    if not roles["val"] or not roles["test"]:
        raise SystemExit(f"{md_root} needs finished val and test sequences; it has {roles}")
    log(f"val {roles['val']}, test {roles['test']}")

    systems = {}

    def system(seq):
        if seq not in systems:
            pep = build(seq, termini)
            systems[seq] = (pep, EnergyModel(pep.topology, checkpoint.preset_of(loaded.config)),
                            load_reference(md_root / seq))
        return systems[seq]

    tuning = []
    for tau in (float(t) for t in a.taus.split(",")):
        scores, ess = [], []
        for seq in roles["val"]:
            pep, em, ref = system(seq)
            res = run_sampling(loaded, pep, SampleConfig(n=a.n_tune, tau=tau, seed=a.seed + 1,
                                                         batch_size=a.batch_size), energy_model=em)
            ens = res.ensemble
            live = np.isfinite(ens.u) & (ens.weights > 0)
            scores.append(e_w2(em.reduced_energy(ref.xyz), ens.u[live], w_model=ens.weights[live]))
            ess.append(ens.ess_fraction)
        tuning.append({"tau": tau, "mean_reweighted_e_w2_val": float(np.mean(scores)),
                       "mean_ess_fraction_val": float(np.mean(ess)),
                       "per_sequence_e_w2": dict(zip(roles["val"], map(float, scores)))})
        log(f"tau {tau}: mean val E-W2 {np.mean(scores):.3f}, mean ESS {100 * np.mean(ess):.2f}%")
    best_tau = min(tuning, key=lambda r: r["mean_reweighted_e_w2_val"])["tau"]

    rows, out_eval = [], dest / "results" / f"ship_{a.name}"
    ref_dir = dest / "assets" / "reference" / a.name
    if ref_dir.exists():
        shutil.rmtree(ref_dir)
    ref_dir.mkdir(parents=True)
    for seq in roles["test"]:
        pep, em, ref = system(seq)
        t0 = time.perf_counter()
        result = run_sampling(loaded, pep, SampleConfig(n=a.n_proposals, tau=best_tau, seed=a.seed,
                                                        batch_size=a.batch_size), energy_model=em)
        report = evaluate(result, ref, out_eval / seq, lag=a.lag, n_eval=a.n_eval, seed=a.seed,
                          energy_model=em)
        m, s = report["metrics"], report["sampling"]
        row = {"sequence": seq, **{f"{ens}_{k}": m[ens][k] for ens in ("proposal", "reweighted")
                                   for k in METRICS},
               **{f"noise_floor_{k}": m["noise_floor"][k] for k in METRICS},
               "ess_fraction": s["ess_fraction"], "reference_frames": int(ref.n_frames),
               "sampling_s": time.perf_counter() - t0}
        rows.append(row)
        log(f"{seq}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items() if k != "sequence"))
        save_reference(ref_dir / f"{system_name(seq, termini)}.npz", ref, pep.features, a.ref_frames,
                       {"system": {"sequence": seq, "termini": termini}, "source": str(md_root / seq),
                        "frames": "all frames of a test sequence"})

    model_dest = checkpoint.copy_weights(a.checkpoint, dest / "assets" / "models" / a.name)
    training = json.loads(Path(a.training_summary).read_text()) if a.training_summary else {}
    training.pop("history", None)
    card = {
        "name": a.name, "transferable": True, "tau": best_tau,
        "description": f"Transferable ArBG for {termini} peptides of length "
                       f"{loaded.config.get('extra', {}).get('lengths')}",
        "training": {"steps": loaded.card.get("steps"), "val_nll": loaded.card.get("val_nll"),
                     "wall_time_s": loaded.card.get("wall_time_s"), "data": loaded.card.get("data"),
                     **{k: training.get(k) for k in ("device", "tokens_per_s", "params", "bf16")}},
        "corpus_md": {"folder": str(a.md), "roles": roles,
                      "protocol": manifest["config"]},
        "tau_tuning": tuning,
        "evaluation": {"zero_shot": "test sequences, never trained on; reference = all their MD frames",
                       "n_proposals": a.n_proposals, "n_eval": a.n_eval,
                       "per_sequence": rows, "mean": mean_table(rows),
                       "goals_reweighted_mean": {"e_w2": 1.0, "t_w2": 0.35, "ess_fraction": 0.02}},
        "commands": {"reproduce": "python " + " ".join(["scripts/ship_transferable.py"] +
                                                        (argv if argv is not None else sys.argv[1:]))},
        "versions": versions(), "notes": a.notes,
    }
    (model_dest / "card.json").write_text(json.dumps(card, indent=2, default=float))
    log(f"mean over {len(rows)} test sequences: " + json.dumps(
        {k: round(v["mean"], 4) for k, v in card["evaluation"]["mean"].items()}))
    log(f"shipped {model_dest} and {ref_dir}")


if __name__ == "__main__":
    main()
