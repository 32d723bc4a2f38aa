"""Refinement on unseen dipeptides (issue #19): the transferable model before and after
`arbg refine` for a few minutes of this machine, each compared with the sequence's own MD.

For every test sequence (never trained on) and every budget, one `arbg refine` run from the
shipped transferable model (a fresh run per budget: the tempering schedule spans the budget),
then the same evaluation the model's card uses (`arbg evaluate`: n fresh proposals at the
model's tau, reweighted, E-W2/T-W2/TICA-W2 against all MD frames with MD-vs-MD noise floors).
The parent is evaluated the same way, with the same seed. Every piece is cached next to its key
under --runs, so a killed run resumes where it stopped and the JSON is rewritten after each piece.

    python -m arbg_core.bench.refine_dipeptides --sequences AR,DY,FR,GT,HC --minutes 10,30 \
        --out results
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .common import cli, write

METRICS = ("ess_fraction", "reweighted_e_w2", "reweighted_t_w2", "reweighted_tica_w2",
           "noise_floor_e_w2", "noise_floor_t_w2", "dropped_fraction", "mirrored_fraction")


def _target(seq: str, termini: str, preset: str, reference_dir: Path):
    from ..energy import EnergyModel
    from ..peptide import build, system_name
    from ..report import load_reference
    from ..tune import Target

    pep = build(seq, termini)
    path = reference_dir if reference_dir.suffix == ".npz" else (
        reference_dir / f"{system_name(seq, termini)}.npz")
    ref = load_reference(path)
    return Target(seq, pep, EnergyModel(pep.topology, preset), ref)


def _evaluate(model_dir: Path, target, n: int, seed: int, lag: int, out: Path) -> dict:
    from ..checkpoint import load, read_card
    from ..files import read_json
    from ..tune import cached, evaluate_target, evaluation_row, weights_hash

    key = {"weights": weights_hash(model_dir), "n": n, "seed": seed, "lag": lag}

    def compute():
        loaded = load(model_dir)
        ev = evaluate_target(loaded, target, loaded.tau, n, n, lag, seed, 512, out)
        return evaluation_row(target, ev) | {"tau": loaded.tau}

    path = out / "row.json"
    if path.is_file() and read_json(path).get("value", {}).get("tau") != read_card(
            model_dir).default_tau:
        path.unlink()  # evaluated at a tau its card no longer has: evaluate again
    return cached(path, key, compute)


def _refined(parent: Path, target, minutes: float, objective: str, lr: float, batch_ess: float,
             seed: int, out: Path, optimizer: str = "adamw", extra: dict | None = None) -> dict:
    """The refined checkpoint in `out` (made once; a kill leaves none), its card's record."""
    from ..checkpoint import load, read_card
    from ..refine import RefineConfig, improved, refine_checkpoint

    if not (out / "model.safetensors").is_file():
        cfg = RefineConfig(objective=objective, steps=None, minutes=minutes, lr=lr,
                           batch_ess=batch_ess, seed=seed, optimizer=optimizer, **(extra or {}))
        refine_checkpoint(load(parent), target.peptide, cfg, out, progress=_log(out))
    else:
        rec = read_card(out).raw["refined"]
        better = improved(rec["history"])
        if "tau_scan" not in rec or (not better and rec["tau"] != rec["tau_before"]):
            _scan_tau(out, target, seed, better)
    rec = read_card(out).raw["refined"]
    return {k: rec[k] for k in ("objective", "steps", "wall_time_s", "rollbacks", "ess_before",
                                "ess_after", "n_fresh", "tau", "tau_before", "tau_scan")}


def _scan_tau(out: Path, target, seed: int, improved: bool) -> None:
    """A model refined before `refine.pick_tau` existed (or before a parent returned unchanged
    kept its tau) gets its tau chosen the way refine() now does; its card says so
    (`tau_scan_after_the_fact`)."""
    from ..checkpoint import load
    from ..files import read_json, write_json
    from ..refine import RefineConfig, pick_tau, target_for

    loaded, card = load(out), read_json(out / "card.json")
    rec = card["refined"]
    cfg = RefineConfig(**{k: v for k, v in rec["config"].items()
                          if k in RefineConfig.__dataclass_fields__} | {"seed": seed})
    loop_tau = cfg.loop_tau(rec["tau_before"]) if improved else rec["tau_before"]
    tau, after, scan = pick_tau(loaded.model, loaded.tokenizer,
                                target_for(target.peptide, loaded.config.preset), cfg,
                                float(loop_tau), _log(out), others=improved)
    rec.update(tau=tau, ess_after=after.ess_fraction, after=after.summary(), tau_scan=scan,
               tau_scan_after_the_fact=True)
    card["tau"] = tau
    write_json(out / "card.json", card)


def _log(out: Path):
    """Progress lines on stderr: the loop's beta, batch ESS and best held-aside score."""
    import sys

    def report(stage: str, done: int, total: int, info: dict) -> None:
        print(f"{out.parent.name}/{out.name} {stage} {done}/{total} "
              + " ".join(f"{k}={v:.4g}" for k, v in info.items()), file=sys.stderr, flush=True)
    return report


def _means(rows: list[dict], budgets: list[str]) -> dict:
    out = {}
    for b in ["before"] + budgets:
        have = [r[b] for r in rows if b in r]
        if have:
            out[b] = {"n_sequences": len(have),
                      **{k: float(np.mean([h[k] for h in have])) for k in METRICS}}
    for b in budgets:  # ratios over the sequences that have both (like for like)
        pairs = [(r["before"], r[b]) for r in rows if b in r and "before" in r]
        if pairs:
            mean = {k: [float(np.mean([p[i][k] for p in pairs])) for i in (0, 1)]
                    for k in ("ess_fraction", "reweighted_e_w2")}
            out[b]["ess_ratio_of_means"] = mean["ess_fraction"][1] / mean["ess_fraction"][0]
            out[b]["ess_ratio_per_sequence"] = [a["ess_fraction"] / max(p["ess_fraction"], 1e-12)
                                                for p, a in pairs]
            out[b]["e_w2_not_worse"] = bool(mean["reweighted_e_w2"][1]
                                            <= mean["reweighted_e_w2"][0])
    return out


def _kept_rows(path: Path, setup: dict, sequences: list[str]) -> list[dict]:
    """The rows of other sequences in an earlier result `path` of the same setup (a different
    setup: an error, rather than a table that mixes two methods)."""
    from ..files import read_json

    if not path.is_file():
        return []
    old = read_json(path)
    differ = [k for k in setup if k != "command" and old.get(k) != setup[k]]
    if differ:
        raise SystemExit(f"{path} was measured with other settings ({', '.join(differ)}): "
                         "give another --name, or run without --keep")
    return [r for r in old["rows"] if r["sequence"] not in sequences]


def _run_name(setup: dict, budget: str) -> str:
    """The folder of one refinement under runs/<sequence> (_bess: the guard's median too)."""
    name = f"refined_{setup['objective']}_lr{setup['lr']:g}"
    name += f"_bess{setup['batch_ess']:g}" if setup["batch_ess"] > 0 else "_fixed"
    name += "_muon" if setup["optimizer"] == "muon" else ""
    name += f"_gs{setup['grad_samples']}" if setup["grad_samples"] else ""
    name += f"_tau{setup['tau']:g}" if "tau" in setup else ""
    return f"{name}_{budget}min"


def _command(setup: dict, sequences: str, minutes: str, reference_dir: str, name: str) -> str:
    """The command line that measures `setup` (run()'s record of its settings)."""
    a = setup
    return (f"python -m arbg_core.bench.refine_dipeptides --sequences {sequences} "
            f"--minutes {minutes} --objective {a['objective']} --optimizer {a['optimizer']} "
            f"--lr {a['lr']} --batch-ess {a['batch_ess']} --n {a['n']} --model {a['model']} "
            f"--termini {a['termini']}"
            + (f" --reference-dir {reference_dir}" if reference_dir else "")
            + (f" --grad-samples {a['grad_samples']}" if a["grad_samples"] else "")
            + (f" --loop-tau {a['tau']:g}" if "tau" in a else "")
            + f" --name {name}")


def run(sequences: str = "AR,DY,FR,GT,HC", minutes: str = "10,30", model: str = "dipeptides",
        termini: str = "zwitterionic", objective: str = "fkl", lr: float = 1e-4,
        batch_ess: float = 0.25, n: int = 10_000, seed: int = 0, lag: int = 10,
        reference_dir: str = "", runs: str = "runs/refine_dipeptides", out_dir: str = "results",
        name: str = "refine_dipeptides", done_only: bool = False, optimizer: str = "adamw",
        grad_samples: int = 0, loop_tau: float = 0.0, keep: bool = False) -> dict:
    """Refine and evaluate; rows written to out_dir/<name>.json as they come. With done_only,
    the JSON of what is finished (several processes may share the work), no new refinement or
    evaluation. reference_dir: a folder of <system>.npz, or one .npz (a per-system model).
    grad_samples, loop_tau: RefineConfig's (loop_tau 0: the card's tau). keep: the rows of other
    sequences already in that JSON, measured with the same setup, stay in it (one measurement
    split over sessions or machines; `runs` need not survive)."""
    from ..checkpoint import read_card, resolve

    parent = resolve(model)
    card = read_card(parent).raw
    preset = card.get("system", {}).get("preset") or card["training"]["data"]["preset"]
    ref_dir = Path(reference_dir) if reference_dir else Path("assets/reference") / model
    budgets = [m.strip() for m in minutes.split(",") if m.strip()]
    rows, t0 = [], time.perf_counter()
    extra = {"grad_samples": grad_samples} | ({"tau": loop_tau} if loop_tau else {})
    setup = {"model": model, "termini": termini, "objective": objective, "optimizer": optimizer,
             "lr": lr, **extra, "batch_ess": batch_ess, "n": n, "seed": seed, "lag": lag,
             "minutes": [float(b) for b in budgets]}

    seqs = [s.strip() for s in sequences.split(",") if s.strip()]
    kept = _kept_rows(Path(out_dir) / f"{name}.json", setup, seqs) if keep else []

    def emit() -> dict:
        every = kept + rows
        setup["command"] = _command(setup, ",".join(r["sequence"] for r in every) or sequences,
                                    minutes, reference_dir, name)
        result = {**setup, "rows": every, "mean": _means(every, budgets),
                  "wall_s": time.perf_counter() - t0}
        write(out_dir, name, result)
        return result

    for seq in seqs:
        base = Path(runs) / seq
        if done_only and not (base / "before" / "row.json").is_file():
            continue
        target = _target(seq, termini, preset, ref_dir)
        row = {"sequence": seq, "before": _evaluate(parent, target, n, seed, lag,
                                                   base / "before")}
        rows.append(row)
        for b in budgets:
            ck = base / _run_name(setup, b)
            ck_eval = base / f"{ck.name}_eval"
            if done_only and not (ck_eval / "row.json").is_file():
                continue
            refine = _refined(parent, target, float(b), objective, lr, batch_ess, seed, ck,
                              optimizer, {"grad_samples": grad_samples, "tau": loop_tau or None})
            row[b] = _evaluate(ck, target, n, seed, lag, ck_eval)
            row[b]["refine"] = refine
            emit()
    return emit()


def table(path: str = "results/refine_dipeptides.json") -> str:
    """The README table of a result file: per sequence and budget, then the means."""
    from ..files import read_json

    d = read_json(path)
    budgets = [f"{m:g}" for m in d["minutes"]]
    lines = ["| sequence | refined | ESS | reweighted E-W2 (floor) | T-W2 (floor) | TICA-W2 | "
             "dropped | mirrored | refine steps (rollbacks) |", "|---" * 9 + "|"]

    def line(name, label, r, extra="—"):
        lines.append(f"| {name} | {label} | {100 * r['ess_fraction']:.3f} % | "
                     f"{r['reweighted_e_w2']:.2f} ({r['noise_floor_e_w2']:.2f}) | "
                     f"{r['reweighted_t_w2']:.2f} ({r['noise_floor_t_w2']:.2f}) | "
                     f"{r['reweighted_tica_w2']:.2f} | {100 * r['dropped_fraction']:.1f} % | "
                     f"{100 * r['mirrored_fraction']:.1f} % | {extra} |")

    for row in d["rows"]:
        line(row["sequence"], "no (parent)", row["before"])
        for b in budgets:
            if b in row:
                ref = row[b]["refine"]
                line(row["sequence"], f"{b} min", row[b], f"{ref['steps']} ({ref['rollbacks']})")
    for b in ["before"] + budgets:
        if b in d["mean"]:
            m = d["mean"][b]
            label = "no (parent)" if b == "before" else f"{b} min"
            extra = "—" if b == "before" else f"ESS x{m['ess_ratio_of_means']:.1f}"
            line(f"**mean of {m['n_sequences']}**", label, m, extra)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    return cli(run, __doc__, argv, show=lambda r: print(r["mean"]))


if __name__ == "__main__":
    main()
