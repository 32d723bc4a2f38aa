"""`arbg fit`: one resumable pipeline from a sequence to a served model (DESIGN §18).

    md -> data -> train -> tune -> evaluate -> model

Everything lives in the fit folder DIR, and every stage resumes after a kill:
    fit.json      the request (sequence, termini, settings): a rerun must match it
    plan.json     settings of every stage and its estimated time here (fit_plan.py)
    state.json    the record of each finished stage (the commit point of a stage)
    status.json   live: stage, done/total, ETA of the stage and of the whole fit, pid
    md/reference/replica_NN, md/hot/replica_NN   `arbg md` folders (resume chunk by chunk)
    data/train.npz                  packed training frames (packed.py)
    train/                          an `arbg train` folder (best/, last/, state/; --resume)
    tune/tau_T.json                 one cached tuning row per tau (tune.py)
    evaluate/                       report.json, figures, evaluation.json (cached by its key)
    model/                          weights, config, card.json, reference.npz: what
                                    `arbg sample --model DIR/model` serves
A stage is redone only from its own last commit: MD from its last chunk, training from its last
saved state, tuning from its last tau; data, evaluation and the model folder are written whole.
One process at a time works in DIR (a lock); MD replicas run as child processes that die with it.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from .files import read_json, write_json
from .fit_plan import STAGES, FitConfig, describe, flag_of, make_plan, probe
from .fit_eval import evaluate_stage, model_stage, tune_stage
from .fit_stages import data_stage, md_stage, train_stage

_CODE = 1  # format of a fit folder
RUNNERS = {"md": md_stage, "data": data_stage, "train": train_stage, "tune": tune_stage,
           "evaluate": evaluate_stage, "model": model_stage}


@dataclass
class Fit:
    """One fit folder and what its stages share."""
    out: Path
    request: dict  # {"sequence", "termini", "config"}
    cfg: FitConfig
    plan: dict = field(default_factory=dict)
    state: dict = field(default_factory=lambda: {"done": {}})
    shared: dict = field(default_factory=dict)  # what later stages reuse within one process

    @cached_property
    def peptide(self):
        from .peptide import build

        return build(self.request["sequence"], self.request["termini"])

    @cached_property
    def device(self):
        from .sampling import resolve_device

        return resolve_device(self.cfg.device)

    @property
    def system(self) -> dict:
        return {"sequence": self.request["sequence"], "termini": self.request["termini"],
                "preset": self.cfg.preset}

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def commit(self, stage: str, record: dict) -> None:
        self.state["done"][stage] = record
        self.state["finished"] = all(s in self.state["done"] for s in STAGES)
        write_json(self.path("state.json"), self.state)

    def remaining_s(self, after: str | None = None) -> float:
        """Planned seconds of the unfinished stages after `after` (all of them if None)."""
        names = list(STAGES)
        later = names[names.index(after) + 1:] if after else names
        return sum(s["estimate_s"] for s in self.plan["stages"]
                   if s["name"] in later and s["name"] not in self.state["done"])


def request_of(sequence: str, termini: str, cfg: FitConfig) -> dict:
    """What a fit folder is for; a rerun on the folder must ask for the same (how many
    processes train is not part of it)."""
    config = {k: v for k, v in asdict(cfg).items() if k != "nproc"}
    return {"format": _CODE, "sequence": sequence, "termini": termini, "config": config}


def open_folder(out: Path, request: dict) -> None:
    """Create DIR for `request`, or check that DIR holds a fit of the same request (ValueError
    naming what differs)."""
    known = out / "fit.json"
    if known.is_file():
        saved = read_json(known)
        if saved == request:
            return
        diff = [f"{flag_of(k)} {saved['config'].get(k)} (now {v})"
                for k, v in request["config"].items() if saved.get("config", {}).get(k) != v]
        diff += [f"{k} {saved.get(k)} (now {request[k]})" for k in ("sequence", "termini")
                 if saved.get(k) != request[k]]
        raise ValueError(f"{out} holds a fit with other settings: {', '.join(diff)}; rerun "
                         "the same command to continue it, or give another --out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an arbg fit folder (no fit.json): give a new "
                         "or empty --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(known, request)


class Busy(ValueError):
    """Another process is running this fit."""


def lock(out: Path):
    """An exclusive lock on the fit folder, held until this process ends (however it ends)."""
    import fcntl

    fd = os.open(out / "fit.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = read_json(out / "status.json").get("pid") if (out / "status.json").is_file() else None
        raise Busy(f"{out} is being worked on by another arbg fit (pid {pid}); wait for it or "
                   "stop it first") from None
    return fd


# ---------------------------------------------------------------------------------- progress


def _status(fit: Fit, stage: str, **extra) -> None:
    write_json(fit.path("status.json"), {"stage": stage, "stages": list(STAGES),
                                          "done_stages": list(fit.state["done"]),
                                          "pid": os.getpid(), "updated": time.time()} | extra)


# ------------------------------------------------------------------------------------- run


def _load_or_make_plan(fit: Fit) -> None:
    """plan.json: read it, or probe the rates here and write it (printed either way)."""
    if fit.path("plan.json").is_file():
        fit.plan = read_json(fit.path("plan.json"))
        print(describe(fit.plan))
        return
    from tqdm import tqdm

    _status(fit, "plan")
    bar = tqdm(total=1, desc=f"plan: measuring rates here ({fit.device})", dynamic_ncols=True)

    def progress(what, done, total):
        bar.total = total
        bar.set_postfix_str(what, refresh=False)
        bar.update(done - bar.n)

    try:
        rates = probe(fit.peptide, fit.cfg, fit.device, progress)
    finally:
        bar.close()
    fit.plan = make_plan(fit.request, fit.cfg, rates)
    write_json(fit.path("plan.json"), fit.plan)
    print(describe(fit.plan))


def run_fit(out: str | Path, sequence: str, termini: str, cfg: FitConfig,
            plan_only: bool = False) -> Fit:
    """Run (or continue) the fit in `out`; returns it with every stage done (with plan_only:
    once plan.json is written). A failure is left in status.json ("failed", its message)."""
    from .errors import one_line

    fit = Fit(Path(out), request_of(sequence, termini, cfg), cfg)
    open_folder(fit.out, fit.request)
    held = lock(fit.out)
    try:
        if fit.path("state.json").is_file():
            fit.state = read_json(fit.path("state.json"))
        _status(fit, "starting")  # this process's pid; no stale stage from a killed run
        _load_or_make_plan(fit)
        if not plan_only:
            _run_stages(fit)
        return fit
    except KeyboardInterrupt:
        _status(fit, "stopped")
        raise
    except Exception as e:
        _status(fit, "failed", error=one_line(e))
        raise
    finally:
        os.close(held)


def run_md_shard(out: str | Path, sequence: str, termini: str, cfg: FitConfig,
                 shard: tuple[int, int]) -> list[str]:
    """Run the MD replicas i, i + n, ... of the fit in `out` to their full length and stop
    (`arbg fit --md-shard i/n`): MD over several machines, each with a copy of the folder. The
    plan must exist (`--plan-only`), so that every machine runs the same replicas. No fit lock:
    shards share nothing but the plan. Returns the replica folders run (relative to `out`)."""
    fit = Fit(Path(out), request_of(sequence, termini, cfg), cfg)
    open_folder(fit.out, fit.request)
    if not fit.path("plan.json").is_file():
        raise ValueError(f"{out} has no plan yet: run the same command with --plan-only first "
                         "and copy the folder to every machine, so that all shards share it")
    fit.plan = read_json(fit.path("plan.json"))
    record = md_stage(fit, shard=shard)
    return list(record["runs"])


def _run_stages(fit: Fit) -> None:
    for stage in STAGES:
        if stage in fit.state["done"]:
            print(f"{stage}: done")
            continue
        print(f"{stage}: {next(s['what'] for s in fit.plan['stages'] if s['name'] == stage)}"
              f" (about {fit.remaining_s() / 60:.1f} min left in all)", flush=True)
        fit.commit(stage, RUNNERS[stage](fit))
    _status(fit, "finished", model=str(fit.path("model")))
