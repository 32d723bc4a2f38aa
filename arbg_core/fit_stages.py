"""The first stages of `arbg fit` (fit.py): reference MD, packed training data, training; and
the progress every stage reports (a tqdm bar, and status.json for anyone following the folder).

MD: `md.run_md` runs per replica in child processes (spawn) that die with the fit (Linux:
PR_SET_PDEATHSIG), so a killed fit leaves no MD writing behind it; a rerun resumes each replica
from its last committed chunk. Training: `train.train` with resume=True continues from the last
saved state/; when the step count came from the budget, what is left of the training share is
its wall-clock budget.
"""

from __future__ import annotations

import os
import signal
import time

from .files import read_json, write_json
from .fit_plan import STAGES


class Tracker:
    """One tqdm bar per stage; status.json for anyone following the folder (the app)."""

    def __init__(self, fit, stage: str, total: float, unit: str, initial: float = 0):
        from tqdm import tqdm

        self.fit, self.stage, self.last = fit, stage, 0.0
        k = STAGES.index(stage) + 1
        self.bar = tqdm(total=total, initial=initial, desc=f"{k}/{len(STAGES)} {stage}",
                        unit=unit, dynamic_ncols=True)
        self.write(initial, total)

    def __call__(self, done: float, total: float, info: dict | None = None) -> None:
        if total != self.bar.total:
            self.bar.reset(total=total)
        if info:
            self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v)
                                  for k, v in info.items() if v is not None}, refresh=False)
        self.bar.update(done - self.bar.n)
        now = time.time()
        if now - self.last > 1.0 or done >= total:
            self.last = now
            self.write(done, total)

    def write(self, done: float, total: float) -> None:
        rate = self.bar.format_dict.get("rate")
        planned = next(s["estimate_s"] for s in self.fit.plan["stages"] if s["name"] == self.stage)
        eta = (total - done) / rate if rate else max(planned - self.bar.format_dict["elapsed"], 0)
        write_json(self.fit.path("status.json"), {
            "stage": self.stage, "stage_index": STAGES.index(self.stage) + 1,
            "stages": list(STAGES), "done_stages": list(self.fit.state["done"]),
            "done": done, "total": total, "unit": self.bar.unit, "stage_eta_s": eta,
            "eta_s": eta + self.fit.remaining_s(self.stage), "pid": os.getpid(),
            "updated": time.time()})

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------------------------- md


def md_jobs(fit) -> list:
    """[(folder, MDConfig)]: the reference replicas at the preset's temperature, then the hot."""
    from .md import MDConfig

    md, cfg = fit.plan["md"], fit.cfg
    jobs = []
    for kind, ns, temperature, seed in (("reference", md["md_ns"], None, cfg.seed),
                                        ("hot", md["hot_ns"], md["hot_temperature_k"],
                                         cfg.seed + 1000)):
        for r in range(md["replicas"]):
            jobs.append((fit.path("md", kind, f"replica_{r:02d}"),
                         MDConfig(ns=ns, preset=cfg.preset, temperature_k=temperature,
                                  save_ps=cfg.save_ps, warmup_ps=cfg.warmup_ps,
                                  chunk_frames=cfg.chunk_frames, seed=seed + r)))
    return jobs


def _die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """Pool initializer (or preexec_fn): this process gets `sig` when the fit process dies
    (Linux)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere a killed fit's MD runs on to the end of its replica
    if os.getppid() != parent_pid:  # the fit died before the line above
        os._exit(1)


def _md_worker(job) -> None:
    from .md import run_md

    topology, xyz, out, config = job
    run_md(topology, xyz, out, config)


def _frames_done(jobs) -> int:
    states = [out / "state.json" for out, _ in jobs]
    return sum(read_json(p)["frames_done"] for p in states if p.is_file())


def md_stage(fit, shard: tuple[int, int] | None = None) -> dict:
    """Every replica to its full length, `parallel` processes at a time (with `shard` (i, n):
    the replicas i, i + n, ... only)."""
    import multiprocessing as mp

    jobs, pep = md_jobs(fit), fit.peptide
    if shard is not None:
        jobs = jobs[shard[0]::shard[1]]
    total = sum(c.n_frames for _, c in jobs)
    track = Tracker(fit, "md", total, "frame", initial=_frames_done(jobs))
    t0 = time.perf_counter()
    try:
        with mp.get_context("spawn").Pool(fit.plan["md"]["parallel"], _die_with_parent,
                                          (os.getpid(),)) as pool:
            result = pool.map_async(_md_worker, [(pep.topology, pep.xyz, out, c)
                                                 for out, c in jobs], chunksize=1)
            while not result.ready():
                result.wait(1.0)
                track(_frames_done(jobs), total)
            result.get()  # an MD error (a blown-up integrator) ends the fit; a rerun resumes
    finally:
        track.close()
    return {"runs": {str(out.relative_to(fit.out)): {"frames": c.n_frames,
                                                      "temperature_k": c.temperature_k}
                     for out, c in jobs}, "wall_s": time.perf_counter() - t0}


# -------------------------------------------------------------------------------------- data


def data_stage(fit) -> dict:
    """Training frames, packed: the first train_frames of each reference replica and every
    hot frame, each replica split 90/10 in time into train and validation."""
    from . import packed
    from .data import prepare

    track = Tracker(fit, "data", 2, "step")
    sources = [f"{fit.path('md', 'reference')}:{fit.plan['md']['train_frames']}",
               str(fit.path("md", "hot"))]
    data = prepare(sources, fractions=(0.9, 0.1, 0.0), system=fit.system)
    track(1, 2)
    packing = packed.save(data, fit.path("data", "train.npz"))
    track(2, 2)
    track.close()
    return {"file": "data/train.npz", "frames": data.meta["frames"], "packing": packing}


# ------------------------------------------------------------------------------------- train


def train_config(fit):
    """The TrainConfig of the plan; a budget-sized run gets what is left of its share."""
    from . import train_state
    from .train import TrainConfig

    t = fit.plan["train"]
    budget = t["budget_s"]
    state = fit.path("train", train_state.STATE_DIR, "state.json")
    if budget is not None and state.is_file():
        budget = max(budget - read_json(state)["elapsed_s"], 1.0)
    return TrainConfig(size=t["size"], steps=t["steps"], batch_size=t["batch_size"],
                       optimizer=t["optimizer"], lr=t["lr"], frame=t["frame"],
                       warmup_steps=t["warmup_steps"], val_every=t["val_every"],
                       save_every=t["val_every"], seed=fit.cfg.seed, budget_s=budget,
                       log_every=1 if fit.device.type == "cpu" else 50)


def train_stage(fit) -> dict:
    from . import train_state
    from .data import FrameData
    from .train import train

    cfg = train_config(fit)
    state = fit.path("train", train_state.STATE_DIR, "state.json")
    track = Tracker(fit, "train", cfg.steps, "step",
                    initial=read_json(state)["step"] if state.is_file() else 0)
    try:
        if fit.cfg.nproc > 1:
            summary = _torchrun_train(fit, cfg, state, track)
        else:
            summary = train(FrameData.load(fit.path("data", "train.npz")), fit.path("train"),
                            cfg, resume=True, device=str(fit.device), progress=track)
    finally:
        track.close()
    if not summary["finished"]:
        print(f"training stopped by its budget at step {summary['steps_done']} of {cfg.steps} "
              "(best/ kept)")
    keep = ("steps", "steps_done", "world_size", "finished", "best_val_nll", "wall_time_s",
            "params", "tokens_per_s", "device", "bf16")
    return {k: summary[k] for k in keep} | {"folder": "train", "best": "train/best"}


def _torchrun_train(fit, cfg, state, track) -> dict:
    """`arbg train --resume` on the fit's data as a torchrun job of fit.cfg.nproc processes
    (DDP; the batch is split over them), which gets SIGTERM when the fit dies (torchrun then
    stops its workers); progress from its saved state. Its summary, as train() returns it."""
    import functools
    import subprocess
    import sys

    from .flags import config_argv

    device = "cpu" if fit.device.type == "cpu" else "auto"  # auto: cuda:LOCAL_RANK per rank
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            str(fit.cfg.nproc), "-m", "arbg_core.cli", "train", "--data",
            str(fit.path("data", "train.npz")), "--out", str(fit.path("train")), "--resume",
            "--device", device, *config_argv(cfg, {"n_bins": "--bins"}, {"save_every": None})]
    log = fit.path("train", "torchrun.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT,
                                preexec_fn=functools.partial(_die_with_parent, os.getpid(),
                                                             signal.SIGTERM))
        while proc.poll() is None:
            time.sleep(1.0)
            if state.is_file():
                track(read_json(state)["step"], cfg.steps)
    if proc.returncode != 0:
        raise RuntimeError(f"training under torchrun stopped with exit code {proc.returncode} "
                           f"(its output: {log.relative_to(fit.out)}); rerun to resume")
    return read_json(fit.path("train", "summary.json"))
