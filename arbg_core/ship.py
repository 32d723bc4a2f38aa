"""`arbg ship`: turn a trained checkpoint into a shipped model. Tune tau on validation MD,
evaluate on test MD the model never saw, write the card, ship thinned test ensembles for the app.

    arbg ship --checkpoint runs/ala2/best --md data/ala2_t300 --train-frames 22000 --name ala2
    arbg ship --transferable --checkpoint runs/dipeptides/best --md data/dipeptides_md \
        --name dipeptides [--wait] [--shard i/n]

Per-system (an `arbg md` folder of the preset-temperature run): frames [0, train_frames) of each
replica were seen in training, the last 10 % of them as the validation block; tau is tuned on
the validation blocks and the card's metrics come from the frames after them.

Transferable (an `arbg md --sequences` folder): roles come from its manifest; tau minimizes the
mean reweighted E-W2 over the `val` sequences (all their frames); the card's metrics are those of
the `test` sequences, zero-shot. With --wait test sequences are evaluated as their MD finishes;
with --shard i/n only every n-th one (several processes at once), and a final run without
--shard ships.

Writes DEST/assets/models/NAME/ (weights, config, card), DEST/assets/reference/ (NAME.npz, or
NAME/SEQ-zw.npz per test sequence) and DEST/results/ship_NAME/ (reports, figures, and the cached
tuning and test rows: each keyed by what it depends on, the weights' hash, tau, sample counts and
seed, so a rerun skips finished work).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .files import read_json, write_json
from .flags import add_config_flags, config_from
from .tune import (MDCorpus, Target, best_tau, cached, evaluate_target, evaluation_row, log,
                   mean_table, reference_test, split_replicas, tune_tau, validation_start,
                   weights_hash)

DEFAULTS = {  # per mode, for the flags left unset
    False: {"taus": "0.9,0.95,1.0,1.05,1.1", "n_tune": 20_000, "batch_size": 256,
            "ref_frames": 10_000},
    True: {"taus": "0.8,0.9,1.0", "n_tune": 10_000, "batch_size": 512, "ref_frames": 2_000},
}
GOALS = {"e_w2": 1.0, "t_w2": 0.35, "ess_fraction": 0.02}  # transferable, reweighted mean


REQUIRED = ("checkpoint", "md", "name")


def _flag(default, help: str, mode: str = ""):
    """A ShipConfig field; `mode`: the only kind of model the flag is for ("" for both)."""
    return field(default=default, metadata={"help": help + (f" ({mode} only)" if mode else ""),
                                            "mode": mode})


@dataclass(frozen=True)
class ShipConfig:
    """The flags of `arbg ship`, one field each (--name-with-dashes); None: the mode's default."""
    checkpoint: str = _flag(None, "trained checkpoint folder, e.g. runs/ala2/best")
    md: str = _flag(None, "`arbg md` folder of the preset-temperature run (per-system) or "
                          "`arbg md --sequences` folder of the corpus (--transferable)")
    name: str = _flag(None, "name of the shipped model")
    transferable: bool = _flag(False, "ship a transferable (sequence-conditioned) model")
    train_frames: int = _flag(None, "frames of each replica seen in training", "per-system")
    val_frames: int = _flag(None, "validation frames of each replica: the last ones of its first "
                                  "train_frames (default 10 %% of them)", "per-system")
    test: str = _flag(None, "test frames from a reference .npz (xyz_test, e.g. assets/reference/"
                            "NAME.npz) instead of the frames after --train-frames: a model "
                            "trained on another MD run evaluated on a shipped model's test split "
                            "(that file is kept as is)", "per-system")
    taus: str = _flag(None, "comma-separated taus to try (per-system 0.9,0.95,1.0,1.05,1.1; "
                            "transferable 0.8,0.9,1.0)")
    n_tune: int = _flag(None, "proposals per validation system and tau (20000; transferable "
                              "10000)")
    n_proposals: int = _flag(100_000, "proposals per test system")
    n_eval: int = _flag(10_000, "samples and frames compared")
    ref_frames: int = _flag(None, "frames per shipped test ensemble (10000; transferable 2000)")
    lag: int = _flag(10, "TICA lag in reference frames")
    batch_size: int = _flag(None, "sampling batch (256; transferable 512)")
    seed: int = _flag(0, "seed of the test draws (tuning uses seed + 1)")
    training_summary: str = _flag(None, "summary.json of the training run, for the card")
    notes: str = _flag("", "free text for the card")
    dest: str = _flag(".", "root of assets/ and results/ (the repository)")
    tune_only: bool = _flag(False, "write results/tau_NAME.json and stop", "per-system")
    tuning: str = _flag(None, "tau tuning JSON of an earlier --tune-only run", "per-system")
    wait: bool = _flag(False, "evaluate test sequences as their MD finishes, until all are done",
                       "transferable")
    shard: str = _flag(None, "i/n: evaluate only every n-th test sequence from i, then stop",
                       "transferable")

    def __post_init__(self):
        from .checks import POSITIVE_INT, SEED, Range, check, optional

        check(self, train_frames=optional(POSITIVE_INT), val_frames=optional(POSITIVE_INT),
              n_tune=optional(POSITIVE_INT),
              n_proposals=POSITIVE_INT, n_eval=Range(int, 2), ref_frames=optional(POSITIVE_INT),
              lag=POSITIVE_INT, batch_size=optional(POSITIVE_INT), seed=SEED)

    def resolved(self) -> "ShipConfig":
        """The mode's defaults for the flags left unset."""
        unset = {k: v for k, v in DEFAULTS[self.transferable].items() if getattr(self, k) is None}
        return ShipConfig(**{**asdict(self), **unset})

    @property
    def tau_values(self) -> list[float]:
        return [float(t) for t in self.taus.split(",")]


def add_parser(sub) -> argparse.ArgumentParser:
    """Register `arbg ship` (flags: the fields of ShipConfig) on the CLI's subparsers."""
    p = sub.add_parser("ship", help="tune tau, evaluate on test MD, write the card and ship",
                       description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p, ShipConfig, required=REQUIRED)
    p.set_defaults(func=cmd_ship)
    return p


def main(argv: list[str] | None = None) -> None:
    """`arbg ship ARGS` without the rest of the CLI (raises cli.UsageError on bad input)."""
    import sys

    parser = argparse.ArgumentParser(prog="arbg")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ship", *(sys.argv[1:] if argv is None else argv)])
    args.func(args)


def script(transferable: bool):
    """`main(argv)` of the old scripts/ship_model.py (per-system) and ship_transferable.py
    (shipped cards record them): `arbg ship`, a usage error exits with its message."""
    def script_main(argv: list[str] | None = None) -> None:
        import sys

        from .errors import UsageError

        argv = sys.argv[1:] if argv is None else list(argv)
        try:
            main(["--transferable", *argv] if transferable else argv)
        except UsageError as e:
            raise SystemExit(f"arbg ship: error: {e}") from None

    return script_main


def cmd_ship(args) -> None:
    from .errors import UsageError

    cfg = config_from(ShipConfig, args)
    mode = "transferable" if cfg.transferable else "per-system"
    wrong = [f.name for f in fields(ShipConfig) if f.metadata["mode"] not in ("", mode)
             and getattr(cfg, f.name) not in (None, False)]
    if wrong:
        raise UsageError(f"--{wrong[0].replace('_', '-')} is for "
                         f"{'per-system' if cfg.transferable else 'transferable'} models only")
    if not cfg.transferable and cfg.train_frames is None:
        raise UsageError("per-system shipping needs --train-frames (or --transferable)")
    loaded = _load(cfg.checkpoint)
    if loaded.config.transferable != cfg.transferable:
        kind = "transferable" if loaded.config.transferable else "single-system"
        raise UsageError(f"{cfg.checkpoint} is a {kind} model: "
                         f"{'add' if loaded.config.transferable else 'drop'} --transferable")
    try:
        (ship_transferable if cfg.transferable else ship_system)(cfg.resolved(), loaded)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None


def _load(path: str):
    from . import checkpoint
    from .errors import UsageError

    try:
        return checkpoint.load(path)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None


def command(cfg: ShipConfig) -> str:
    """The `arbg ship` command line of `cfg` (flags that differ from their defaults)."""
    words = []
    for f in fields(ShipConfig):
        value = getattr(cfg, f.name)
        if value != f.default and value is not None:
            words += [f"--{f.name.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return "arbg ship " + shlex.join(words)


# --- the card, shared by both kinds --------------------------------------------------------------

def training_section(card, training_summary: str | None) -> dict:
    """What the card says about training: the checkpoint's own card plus the run's summary."""
    training = read_json(training_summary) if training_summary else {}
    return {"steps": card.steps, "val_nll": card.val_nll, "wall_time_s": card.wall_time_s,
            "data": card.data,
            **{k: training.get(k) for k in ("device", "tokens_per_s", "params", "bf16")}}


def write_card(cfg: ShipConfig, loaded, identity: dict, description: str, source: dict,
               tuning: list[dict], tau: float, evaluation: dict) -> Path:
    """Copy the weights to DEST/assets/models/NAME and write its card; returns the folder.

    identity: {"system": ...} or {"transferable": True}; source: {"md_reference": ...} or
    {"corpus_md": ...}."""
    from . import checkpoint
    from .pipeline import versions

    card = {"name": cfg.name, **identity, "tau": tau, "description": description,
            "training": training_section(loaded.card, cfg.training_summary), **source,
            "tau_tuning": tuning, "evaluation": evaluation,
            "commands": {"reproduce": command(cfg)}, "versions": versions(), "notes": cfg.notes}
    # weights, config and card put in place together: a kill leaves the old model or the new
    return checkpoint.copy_weights(cfg.checkpoint, Path(cfg.dest) / "assets" / "models" / cfg.name,
                                   card=card)


# --- per-system ----------------------------------------------------------------------------------

def _system_tuning(cfg: ShipConfig, loaded, val: Target, cache_dir: Path) -> list[dict]:
    """Per-system tuning rows {tau, reweighted_e_w2_val, ess_fraction} (from --tuning if given)."""
    if cfg.tuning:
        return read_json(cfg.tuning)
    rows = tune_tau(loaded, [val], cfg.tau_values, cfg.n_tune, cfg.seed, cfg.batch_size,
                    cache_dir, weights_hash(cfg.checkpoint))
    return [{"tau": r["tau"], "reweighted_e_w2_val": r["mean_reweighted_e_w2_val"],
             "ess_fraction": r["mean_ess_fraction_val"]} for r in rows]


def ship_system(cfg: ShipConfig, loaded) -> Path | None:
    from .data import load_source, save_reference
    from .energy import EnergyModel
    from .md import run_meta
    from .peptide import build

    spec, dest = loaded.config.system, Path(cfg.dest)
    pep = build(spec.sequence, spec.termini)
    em = EnergyModel(pep.topology, spec.preset)
    val, test = split_replicas(load_source(cfg.md), cfg.train_frames, cfg.val_frames,
                               need_test=not cfg.test)
    if cfg.test:
        test = reference_test(cfg.test, pep.topology)
    log(f"validation frames {val.n_frames}, test frames {test.n_frames}")
    out_eval = dest / "results" / f"ship_{cfg.name}"
    # what the tuning cache's key says it validated on
    val_name = (f"{pep.name} frames {validation_start(cfg.train_frames, cfg.val_frames)}.."
                f"{cfg.train_frames} of {cfg.md}")
    u_val = None if cfg.tuning else em.reduced_energy(val.xyz)
    tuning = _system_tuning(cfg, loaded, Target(val_name, pep, em, val, u_val), out_eval / "tuning")
    tau = best_tau(tuning, "reweighted_e_w2_val")
    if cfg.tune_only:
        out = write_json(dest / "results" / f"tau_{cfg.name}.json", tuning)
        log(f"best tau {tau}; tuning -> {out}")
        return None
    ev = evaluate_target(loaded, Target(spec.sequence, pep, em, test), tau, cfg.n_proposals,
                         cfg.n_eval, cfg.lag, cfg.seed, cfg.batch_size, out_eval)
    report, s = ev.report, ev.report["sampling"]
    log(f"test: {json.dumps(report['metrics'])}")
    md_meta = run_meta(cfg.md)
    split = (f"the test frames of {cfg.test} ({test.n_frames} frames of another MD run)"
             if cfg.test else f"frames {cfg.train_frames}.. of each replica of the MD run "
             f"({test.n_frames} frames, never seen in training)")
    evaluation = {"split": split,
                  "n_proposals": cfg.n_proposals, "n_eval": cfg.n_eval,
                  "metrics": report["metrics"], "ess": s.get("ess"),
                  "ess_fraction": s.get("ess_fraction"), "counts": s.get("counts"),
                  "phi_positive_basin": report["phi_positive_basin"],
                  "reference_alpha_l_entries": report["reference"]["alpha_l_entries"],
                  "sampling_wall_time_s": ev.sample_s, "machine": "2-core CPU, no GPU"}
    model_dir = write_card(cfg, loaded, {"system": asdict(spec)},
                           f"Per-system ArBG for {pep.name} ({pep.n_atoms} atoms)",
                           {"md_reference": {"folder": cfg.md, **md_meta}}, tuning, tau, evaluation)
    ref = dest / "assets" / "reference" / f"{cfg.name}.npz"
    if cfg.test and ref.resolve() == Path(cfg.test).resolve():
        log(f"shipped {model_dir}; its test ensemble stays {ref}")
        return model_dir
    ref.parent.mkdir(parents=True, exist_ok=True)
    save_reference(ref, test, pep.features, cfg.ref_frames,
                   {"system": asdict(spec), "source": cfg.md,
                    "frames": f"{cfg.train_frames}.. of each replica",
                    "save_ps": md_meta["config"]["save_ps"]})
    log(f"shipped {model_dir} and {ref}")
    return model_dir


# --- transferable --------------------------------------------------------------------------------

def _targets(corpus: MDCorpus, preset: str):
    """seq -> Target, built once per sequence on first use."""
    from .energy import EnergyModel
    from .peptide import build
    from .report import load_reference

    made = {}

    def target(seq: str) -> Target:
        if seq not in made:
            pep = build(seq, corpus.termini)
            made[seq] = Target(seq, pep, EnergyModel(pep.topology, preset),
                               load_reference(corpus.root / seq))
        return made[seq]

    return target


def _shard(spec: str | None, items: list[str]) -> list[str]:
    if not spec:
        return items
    try:
        i, n = map(int, spec.split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        raise ValueError(f"--shard must be i/n with 0 <= i < n, got {spec!r}") from None
    return items[i::n]


def _test_rows(cfg: ShipConfig, loaded, corpus: MDCorpus, target, tau: float, mine: list[str],
               weights: str) -> list[dict]:
    """The cached evaluation row of each of `mine` whose MD has finished (with --wait: of all)."""
    out_eval = Path(cfg.dest) / "results" / f"ship_{cfg.name}"
    key = {"weights": weights, "tau": tau, "n": cfg.n_proposals, "n_eval": cfg.n_eval,
           "seed": cfg.seed, "lag": cfg.lag}
    rows = []
    while True:  # with --wait, test sequences are evaluated as their MD finishes
        todo = [seq for seq in mine if seq not in {r["sequence"] for r in rows}
                and corpus.finished(seq)]
        for seq in todo:
            rows.append(cached(out_eval / seq / "row.json", key, lambda: evaluation_row(
                target(seq), evaluate_target(loaded, target(seq), tau, cfg.n_proposals, cfg.n_eval,
                                             cfg.lag, cfg.seed, cfg.batch_size, out_eval / seq))))
            log(f"{seq}: " + ", ".join(f"{k} {v:.3g}" for k, v in rows[-1].items()
                                       if k != "sequence"))
        if len(rows) == len(mine) or not cfg.wait:
            return rows
        if not todo:
            time.sleep(60)


def _ship_references(cfg: ShipConfig, corpus: MDCorpus, target, sequences: list[str]) -> Path:
    from .data import save_reference
    from .peptide import system_name

    ref_dir = Path(cfg.dest) / "assets" / "reference" / cfg.name
    if ref_dir.exists():
        shutil.rmtree(ref_dir)
    ref_dir.mkdir(parents=True)
    for seq in sequences:
        t = target(seq)
        save_reference(ref_dir / f"{system_name(seq, corpus.termini)}.npz", t.reference,
                       t.peptide.features, cfg.ref_frames,
                       {"system": {"sequence": seq, "termini": corpus.termini},
                        "source": str(corpus.root / seq),
                        "frames": "all frames of a test sequence"})
    return ref_dir


def ship_transferable(cfg: ShipConfig, loaded) -> Path | None:
    corpus = MDCorpus.open(cfg.md)
    roles, all_test = corpus.by_role(), corpus.listed("test")
    if not roles["val"] or not all_test:
        raise ValueError(f"{corpus.root} needs finished val sequences and listed test sequences; "
                         f"it has {roles}")
    log(f"val {roles['val']}, test {roles['test']}")
    target, weights = _targets(corpus, loaded.config.preset), weights_hash(cfg.checkpoint)
    out_eval = Path(cfg.dest) / "results" / f"ship_{cfg.name}"
    tuning = tune_tau(loaded, [target(s) for s in roles["val"]], cfg.tau_values, cfg.n_tune,
                      cfg.seed, cfg.batch_size, out_eval / "tuning", weights)
    tau = best_tau(tuning)
    mine = _shard(cfg.shard, all_test)
    rows = _test_rows(cfg, loaded, corpus, target, tau, mine, weights)
    if cfg.shard and len(rows) == len(mine):
        log(f"shard {cfg.shard}: {len(rows)} test sequences done; rerun without --shard to ship")
        return None
    if len(rows) < len(mine):
        raise ValueError(f"MD of {len(mine) - len(rows)} test sequences is not finished: "
                         "rerun later (finished work is kept), or with --wait")
    rows.sort(key=lambda r: all_test.index(r["sequence"]))
    ref_dir = _ship_references(cfg, corpus, target, all_test)
    lengths = loaded.config.coverage.lengths
    evaluation = {"zero_shot": "test sequences, never trained on; reference = all their MD frames",
                  "n_proposals": cfg.n_proposals, "n_eval": cfg.n_eval,
                  "per_sequence": rows, "mean": mean_table(rows), "goals_reweighted_mean": GOALS}
    model_dir = write_card(
        cfg, loaded, {"transferable": True}, f"Transferable ArBG for {corpus.termini} peptides "
        f"of length {list(lengths) if lengths else None}",
        {"corpus_md": {"folder": cfg.md, "roles": corpus.by_role(),
                       "protocol": corpus.manifest["config"]}}, tuning, tau, evaluation)
    log(f"mean over {len(rows)} test sequences: " + json.dumps(
        {k: round(v["mean"], 4) for k, v in evaluation["mean"].items()}))
    log(f"shipped {model_dir} and {ref_dir}")
    return model_dir


if __name__ == "__main__":
    main()
