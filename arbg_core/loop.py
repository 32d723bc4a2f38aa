"""The training loop's steps (`Run`): batches (resident on the device or drawn on the host),
the optimizer step, validation and `best/`, saves, the wall-clock budget and the state that
`--resume` continues from. `train.py` builds a `Run` and drives it.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpoint, train_state
from .batches import encode_batch, validation_nll
from .data import FrameData
from .model import ArBG, train_loss
from .resident import ResidentFrames
from .tokenizer import Tokenizer

MOMENTS = {"fp32": torch.float32, "bf16": torch.bfloat16}  # TrainConfig.moments
LEGACY_STATE_FILE = "train_state.pt"  # the state before train_state.py (read, never written)


def lr_factor(step: int, cfg) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def use_bf16(cfg, device: torch.device) -> bool:
    if cfg.bf16 != "auto":
        return cfg.bf16 == "on"
    if device.type == "cpu":
        return cpu_bf16_is_faster()
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def switch(value: str, device: torch.device) -> bool:
    """An auto | on | off setting whose auto means "on CUDA"."""
    return value == "on" or (value == "auto" and device.type == "cuda")


@functools.lru_cache(maxsize=1)
def cpu_bf16_is_faster(speedup: float = 1.5) -> bool:
    """Whether a bf16 matmul of training's shape runs `speedup` times faster than fp32 on this CPU
    (5-10x with AMX units; training a `small` model then takes ~1.7x less time). The best of
    several timings after a warm-up, so a busy machine or a kernel's first-call set-up does not
    decide it."""
    a, b = torch.randn(8192, 128), torch.randn(128, 384)

    def best(x, y):
        x @ y  # warm-up: oneDNN builds its bf16 kernels on first use
        times = []
        for _ in range(9):
            t = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t)
        return min(times)

    return best(a, b) > speedup * best(a.bfloat16(), b.bfloat16())


def set_lr(opts: list[torch.optim.Optimizer], factor: float) -> None:
    for opt in opts:
        for group in opt.param_groups:
            group.setdefault("base_lr", group["lr"])  # saved with the optimizer state
            group["lr"] = group["base_lr"] * factor


@dataclass
class Run:
    """One training run: what its steps share. Rank 0 validates and saves."""

    cfg: "TrainConfig"  # noqa: F821 (train imports this module, so not imported here)
    out: Path
    model: ArBG
    opts: list
    tok: Tokenizer
    dev: torch.device
    rank: int
    world: int
    system: dict | None
    provenance: dict
    clamped: float
    fingerprint: str
    extra: dict  # checkpoint config extras
    start_step: int = 0
    best_val: float = float("inf")
    history: list = field(default_factory=list)
    elapsed0: float = 0.0  # seconds of the runs this one continues
    val: float | None = None  # the latest validation NLL
    resumed: str = "fresh"  # how the run began: fresh | exact | reseeded (another device's RNG)
    stopped_at: int | None = None  # the step at which budget_s stopped the run
    # set by start():
    fwd: torch.nn.Module = field(init=False)  # DDP and/or compiled view of the model
    bf16: bool = field(init=False)
    gen: torch.Generator = field(init=False)  # draws the batches
    resident: ResidentFrames | None = field(init=False)
    tokens: torch.Tensor = field(init=False)  # real tokens this rank trained on (on the device)
    t0: float = field(init=False)  # time.perf_counter() at the first step
    slowest_s: float = 0.0  # the longest step + validation + save so far: the budget's margin

    def elapsed(self) -> float:
        return self.elapsed0 + time.perf_counter() - self.t0

    def resume(self) -> dict | None:
        """Load state/ (or an older train_state.pt) if there is one; returns its record."""
        legacy = self.out / LEGACY_STATE_FILE
        if train_state.exists(self.out / train_state.STATE_DIR):
            state, rng = train_state.load(self.out / train_state.STATE_DIR, self.model, self.opts)
            state["generator"] = rng
        elif legacy.exists():  # our own file: weights_only all the same
            state = torch.load(legacy, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state["model"])
            for opt, s in zip(self.opts, state["optimizers"]):
                opt.load_state_dict(s)
            state["history"] = json.loads(state["history"])
        else:
            return None
        if state.get("fingerprint", self.fingerprint) != self.fingerprint:
            raise ValueError(f"{self.out} was trained on other data or settings "
                             f"({state['fingerprint']}, now {self.fingerprint}): resume with the "
                             "same --data and --size, or start a new --out")
        self.start_step, self.best_val = int(state["step"]), float(state["best_val"])
        self.history, self.elapsed0 = state["history"], float(state["elapsed_s"])
        return state

    def start(self, state: dict | None, source) -> None:
        """DDP / compile wrappers, bf16 choice, resident frames and the batch generator; starts
        the clock."""
        cfg, world = self.cfg, self.world
        self.fwd = self.model
        if world > 1:
            self.fwd = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.dev.index] if self.dev.type == "cuda" else None)
        if switch(cfg.compile, self.dev):
            self.fwd = torch.compile(self.fwd)
        self.bf16 = use_bf16(cfg, self.dev)
        self.resident = (ResidentFrames(self.tok, source, self.dev)
                         if isinstance(source, FrameData) and switch(cfg.resident, self.dev)
                         else None)
        self.gen = torch.Generator(self.dev if self.resident else "cpu").manual_seed(
            cfg.seed * 1000 + self.rank * 7919 + (self.start_step if world > 1 else 0))
        if state is not None and world == 1:
            if state.get("rng_device", "cpu") == self.gen.device.type:
                self.gen.set_state(state["generator"])  # draws what the unbroken run would
                self.resumed = "exact"
            else:  # another device's generator: a fresh stream, seeded by the step
                self.gen.manual_seed(cfg.seed * 1000 + self.start_step)
                self.resumed = "reseeded"
        elif state is not None:
            self.resumed = "reseeded"
        self.tokens = torch.zeros((), dtype=torch.long, device=self.dev)
        self.t0 = time.perf_counter()
        self.model.train()

    def batch(self, source) -> tuple[torch.Tensor, object]:
        per_rank = max(1, self.cfg.batch_size // self.world)
        if self.resident is not None:
            return self.resident.batch(per_rank, self.gen)
        bins, cond, _ = encode_batch(self.tok, source.sample_batch(per_rank, self.gen), self.gen)
        return bins.to(self.dev, non_blocking=True), cond.to(self.dev)

    def step(self, step: int, source, vals: dict, progress) -> None:
        """One optimizer step, then (rank 0) validation, saving and the progress callback. The
        host reads from the device only when it reports, validates or saves."""
        cfg, t = self.cfg, time.perf_counter()
        set_lr(self.opts, lr_factor(step, cfg))
        bins, cond = self.batch(source)
        self.tokens += cond.valid.expand(bins.shape[0], -1).sum()
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = train_loss(self.fwd, bins, cond)
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        for opt in self.opts:
            opt.step()
        done = step + 1
        is_last = done == cfg.steps
        if self.rank != 0:
            return
        if done % cfg.val_every == 0 or is_last:
            self.validate(done, loss.item(), vals)
        if done % cfg.save_every == 0 or is_last:
            self.save("last", done, self.val)
            self.save_state(done)
        if progress and (done % cfg.log_every == 0 or is_last):
            progress(done, cfg.steps, {"loss": loss.item(), "grad_norm": float(gnorm),
                                       "val_nll": self.val,
                                       "lr": self.opts[0].param_groups[0]["lr"]})
        if done % cfg.log_every == 0 or self.dev.type != "cuda":
            self.slowest_s = max(self.slowest_s, time.perf_counter() - t)

    def out_of_time(self, done: int) -> bool:
        """Whether another step (with a validation and a save) could pass budget_s; every rank
        gets rank 0's answer."""
        cfg = self.cfg
        if cfg.budget_s is None or done >= cfg.steps:
            return False
        late = time.perf_counter() - self.t0 + 3 * self.slowest_s > cfg.budget_s
        if self.world > 1:
            flag = torch.tensor(float(late), device=self.dev)
            torch.distributed.broadcast(flag, 0)
            late = bool(flag.item())
        return late

    def stop_early(self, done: int, vals: dict) -> None:
        """The budget is spent: validate, save last/ and the state, so --resume goes on."""
        if self.rank == 0:
            self.validate(done, float("nan"), vals)
            self.save("last", done, self.val)
            self.save_state(done)
        self.stopped_at = done

    def validate(self, done: int, train_loss: float, vals: dict) -> None:
        """NLL of every validation set into the history; a new best is saved to best/."""
        nlls = {k: validation_nll(self.model, self.tok, groups, self.dev, bf16=self.bf16)
                for k, groups in vals.items()}
        self.val = nlls[next(iter(vals))]
        self.history.append({"step": done, "train_loss": train_loss} | nlls)
        if self.val < self.best_val:
            self.best_val = self.val
            self.save("best", done, self.val)

    def save(self, name: str, step: int, val: float | None) -> None:
        card = {"steps": step, "val_nll": val, "wall_time_s": self.elapsed(),
                "clamped_fraction": self.clamped, "data": self.provenance}
        checkpoint.save(self.out / name, self.model, self.tok.cfg, system=self.system, card=card,
                        transferable=(self.system is None), extra=self.extra)

    def save_state(self, done: int) -> None:
        """state/ holds everything --resume needs, replaced whole (train_state.py)."""
        train_state.save(self.out / train_state.STATE_DIR, self.model, self.opts, self.gen,
                         {"step": done, "best_val": self.best_val, "history": self.history,
                          "elapsed_s": self.elapsed(), "fingerprint": self.fingerprint,
                          "total_steps": self.cfg.steps}, MOMENTS[self.cfg.moments])
        (self.out / LEGACY_STATE_FILE).unlink(missing_ok=True)  # superseded

    def summary(self) -> dict:
        wall, seconds = self.elapsed(), max(time.perf_counter() - self.t0, 1e-9)
        done = self.stopped_at or self.cfg.steps
        summary = {"steps": self.cfg.steps, "steps_done": done, "finished": done == self.cfg.steps,
                   "resumed": self.resumed, "best_val_nll": self.best_val, "history": self.history,
                   "wall_time_s": wall, "params": self.model.num_params(),
                   "clamped_fraction": self.clamped,
                   "tokens_per_s": int(self.tokens) * self.world / seconds,
                   "device": str(self.dev), "bf16": self.bf16, "world_size": self.world,
                   "resident": self.resident is not None, "transferable": self.system is None}
        if self.system is None:
            summary |= {"lengths": self.extra["lengths"], "termini": self.extra["termini"]}
        return summary
