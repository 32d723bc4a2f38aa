"""The last stages of `arbg fit` (fit.py): tau tuning, evaluation against held-back MD, and the
model folder, with what `arbg ship` uses for a per-system model (tune.py): tau minimizes the
reweighted E-W2 against the validation block (the last 10 % of each reference replica's training
frames); the evaluation compares with the frames after the training block, which training never
saw, with MD-vs-MD noise floors. Each tau's row and the evaluation are cached under a key of
the weights' hash and the settings, so a killed stage resumes from its last finished piece.
"""

from __future__ import annotations

import shutil

from .files import write_json
from .fit_plan import command_line
from .fit_stages import Tracker


def _loaded(fit):
    from . import checkpoint

    if "loaded" not in fit.shared:
        fit.shared["loaded"] = checkpoint.load(fit.path("train", "best"), device=fit.device)
    return fit.shared["loaded"]


def _frames(fit):
    """(EnergyModel, validation frames, held-back test frames) of the reference replicas."""
    from .data import load_source
    from .energy import EnergyModel
    from .tune import split_replicas

    if "frames" not in fit.shared:
        em = EnergyModel(fit.peptide.topology, fit.cfg.preset)
        val, test = split_replicas(load_source(fit.path("md", "reference")),
                                   fit.plan["md"]["train_frames"])
        fit.shared["frames"] = em, val, test
    return fit.shared["frames"]


def _batch(fit, n: int) -> int:
    return min(n, 1024 if fit.device.type == "cuda" else 256)


def _sampling_progress(track: Tracker, first: int, n: int, info: dict):
    """run_sampling's progress(stage, done, total) as proposals done since `first`."""
    def progress(stage, done, total):
        track(first + (done if stage == "sample" else n), track.bar.total, info | {"at": stage})

    return progress


def tune_stage(fit) -> dict:
    from .tune import Target, best_tau, tune_tau, weights_hash

    ev, pep = fit.plan["evaluation"], fit.peptide
    loaded, (em, val, _) = _loaded(fit), _frames(fit)
    target = Target(f"{pep.name} validation block", pep, em, val, em.reduced_energy(val.xyz))
    weights, n = weights_hash(fit.path("train", "best")), ev["n_tune"]
    track = Tracker(fit, "tune", len(ev["taus"]) * n, "proposal")
    rows = []
    try:
        for k, tau in enumerate(ev["taus"]):
            row = tune_tau(loaded, [target], [tau], n, fit.cfg.seed, _batch(fit, n),
                           fit.path("tune"), weights,
                           progress=_sampling_progress(track, k * n, n, {"tau": tau}))[0]
            rows.append({"tau": tau, "reweighted_e_w2_val": row["mean_reweighted_e_w2_val"],
                         "ess_fraction": row["mean_ess_fraction_val"]})
            track((k + 1) * n, track.bar.total)
    finally:
        track.close()
    return {"tau": best_tau(rows, "reweighted_e_w2_val"), "rows": rows, "n_tune": n,
            "validation_frames": int(val.n_frames)}


def _evaluation(fit, loaded, target, tau: float, track: Tracker) -> dict:
    from .tune import evaluate_target

    ev = fit.plan["evaluation"]
    n = ev["n_proposals"]
    result = evaluate_target(loaded, target, tau, n, ev["n_eval"], ev["lag_frames"], fit.cfg.seed,
                             _batch(fit, n), fit.path("evaluate"),
                             progress=_sampling_progress(track, 0, n, {}))
    report, s = result.report, result.report["sampling"]
    return {"split": f"frames {fit.plan['md']['train_frames']}.. of each reference replica "
                     f"({target.reference.n_frames} frames, never seen in training)",
            "n_proposals": n, "n_eval": ev["n_eval"], "lag_frames": ev["lag_frames"],
            "metrics": report["metrics"], "ess": s.get("ess"),
            "ess_fraction": s.get("ess_fraction"), "counts": s.get("counts"),
            "phi_positive_basin": report["phi_positive_basin"],
            "reference_alpha_l_entries": report["reference"]["alpha_l_entries"],
            "sampling_wall_time_s": result.sample_s, "device": str(fit.device)}


def evaluate_stage(fit) -> dict:
    from .tune import Target, cached, weights_hash

    ev, pep, tau = fit.plan["evaluation"], fit.peptide, fit.state["done"]["tune"]["tau"]
    loaded, (em, _, test) = _loaded(fit), _frames(fit)
    key = {"weights": weights_hash(fit.path("train", "best")), "tau": tau,
           "n": ev["n_proposals"], "n_eval": ev["n_eval"], "seed": fit.cfg.seed,
           "lag": ev["lag_frames"]}
    track = Tracker(fit, "evaluate", ev["n_proposals"], "proposal")
    try:
        return cached(fit.path("evaluate", "evaluation.json"), key, lambda: _evaluation(
            fit, loaded, Target(pep.sequence, pep, em, test), tau, track))
    finally:
        track.close()


def _card(fit) -> dict:
    from . import checkpoint
    from .md import run_meta
    from .pipeline import versions
    from .ship import training_section

    pep, done = fit.peptide, fit.state["done"]
    best = fit.path("train", "best")
    return {"name": pep.name, "system": fit.system, "tau": done["tune"]["tau"],
            "description": f"Per-system ArBG for {pep.name} ({pep.n_atoms} atoms), built by "
                           "arbg fit",
            "training": training_section(checkpoint.read_card(best),
                                         str(fit.path("train", "summary.json"))),
            "md_reference": {"folder": "md/reference", **run_meta(fit.path("md", "reference"))},
            "md_hot": {"folder": "md/hot", **run_meta(fit.path("md", "hot"))},
            "tau_tuning": done["tune"]["rows"], "evaluation": done["evaluate"],
            "plan": {k: fit.plan[k] for k in ("md", "train", "evaluation", "estimate_s",
                                              "budget_s", "rates")},
            "commands": {"reproduce": command_line(fit.request)}, "versions": versions(),
            "notes": "reference ensemble (held-back MD frames) in reference.npz"}


def model_stage(fit) -> dict:
    """DIR/model: the best weights, their config, the card and the held-back reference frames,
    put in place whole (files.output_folder)."""
    from . import checkpoint
    from .data import save_reference
    from .files import output_folder

    track = Tracker(fit, "model", 1, "folder")
    best, (_, _, test) = fit.path("train", "best"), _frames(fit)
    card = _card(fit)
    with output_folder(fit.path("model"), checkpoint.CONFIG) as tmp:
        for name in (checkpoint.WEIGHTS, checkpoint.CONFIG):
            shutil.copyfile(best / name, tmp / name)
        write_json(tmp / checkpoint.CARD, card)
        save_reference(tmp / "reference.npz", test, fit.peptide.features, 10_000,
                       {"system": fit.system, "source": "md/reference",
                        "frames": f"{fit.plan['md']['train_frames']}.. of each replica",
                        "save_ps": fit.cfg.save_ps})
    track(1, 1)
    track.close()
    return {"folder": "model", "tau": card["tau"], "ess_fraction": card["evaluation"]["ess_fraction"]}
