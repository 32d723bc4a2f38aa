"""Training loop: teacher-forced cross-entropy over bins, one process or torchrun (DDP).

Every step draws a batch of frames, rotates each one at random about its centroid, tokenizes,
and minimizes the mean cross-entropy. AdamW (or Muon on the weight matrices) with linear
warm-up and cosine decay, gradient clipping, bf16 autocast where the device supports it.
Rank 0 validates (NLL in nats per nm-coordinate of the continuous density), keeps `best/` and
`last/` checkpoints (safetensors + JSON) and a `train_state.pt` that `--resume` continues from.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import checkpoint
from .data import FrameData, random_rotations, rotate
from .model import ArBG, ModelConfig, conditioning, shift_right, train_loss
from .tokenizer import Tokenizer, TokenizerConfig


@dataclass(frozen=True)
class TrainConfig:
    size: str = "small"
    n_bins: int | None = None  # None: the size preset's
    a: float = 3.0
    steps: int = 10_000
    batch_size: int = 256
    lr: float = 1e-3
    muon_lr: float | None = None  # None: lr (Muon's update is RMS-matched to AdamW's)
    weight_decay: float = 0.01
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    optimizer: str = "adamw"  # "adamw" | "muon" (Muon on 2D block weights, AdamW on the rest)
    bf16: str = "auto"  # "auto" (CUDA with bf16 support) | "on" | "off"
    val_every: int = 500
    val_frames: int = 2048
    save_every: int = 500
    seed: int = 0


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _optimizers(model: ArBG, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    if cfg.optimizer == "adamw":
        return [torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  betas=(0.9, 0.95))]
    if cfg.optimizer == "muon":
        matrices = [p for n, p in model.named_parameters() if p.ndim == 2 and ".blocks." in f".{n}"]
        ids = {id(p) for p in matrices}
        rest = [p for p in model.parameters() if id(p) not in ids]
        return [torch.optim.Muon(matrices, lr=cfg.muon_lr or cfg.lr, weight_decay=cfg.weight_decay,
                                 adjust_lr_fn="match_rms_adamw"),
                torch.optim.AdamW(rest, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))]
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose adamw or muon")


def _use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    if cfg.bf16 == "on":
        return True
    if cfg.bf16 == "off":
        return False
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def _loss(net, bos: int, bins: torch.Tensor, cond) -> torch.Tensor:
    """Mean cross-entropy over valid tokens through `net` (the model or its DDP wrapper)."""
    logits = net(shift_right(bins, bos), cond)  # (B, T, V)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, bins.unsqueeze(-1)).squeeze(-1)
    valid = cond.valid.expand_as(bins)
    return -(logp * valid).sum() / valid.sum()


def _dist_info() -> tuple[int, int, int]:
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


@torch.no_grad()
def validation_nll(model: ArBG, tok: Tokenizer, xyz: np.ndarray, cond, device, batch_size=512,
                   bf16=False) -> float:
    """Mean NLL of the continuous density on `xyz`, nats per nm-coordinate (no rotation)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(xyz), batch_size):
        bins, _ = tok.encode(xyz[i:i + batch_size])
        bins = bins.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = train_loss(model, bins, cond.expand(len(bins)))
        total += loss.item() * len(bins)
        count += len(bins)
    model.train()
    return tok.nats_per_coordinate(total / max(count, 1))


def train(data: FrameData, out_dir: str | Path, cfg: TrainConfig = TrainConfig(),
          resume: bool = False, device: str = "auto",
          progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train a single-system model on `data`; returns a summary dict (also written to out_dir)."""
    rank, world, local_rank = _dist_info()
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    out = Path(out_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    if len(data.xyz_train) == 0:
        raise ValueError("no training frames")
    std = Tokenizer.fit_std(data.xyz_train)
    mcfg = ModelConfig.preset(cfg.size, n_bins=cfg.n_bins)
    tok = Tokenizer(TokenizerConfig(n_bins=mcfg.n_bins, a=cfg.a, std=std))
    _, clamped = tok.encode(data.xyz_train[: min(len(data.xyz_train), 20000)])
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = ArBG(mcfg).to(dev)
    opts = _optimizers(model, cfg)
    start_step, best_val, history, elapsed0 = 0, float("inf"), [], 0.0
    state_file = out / "train_state.pt"
    if resume and state_file.exists():
        # Our own file: weights_only=True all the same (tensors, numbers and dicts only).
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        for opt, s in zip(opts, state["optimizers"]):
            opt.load_state_dict(s)
        start_step, best_val = int(state["step"]), float(state["best_val"])
        history, elapsed0 = json.loads(state["history"]), float(state["elapsed_s"])
    cond = conditioning(data.features).to(dev)  # (1, T)
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)
    bf16 = _use_bf16(cfg, dev)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank * 7919 + (start_step if world > 1 else 0))
    if resume and state_file.exists() and world == 1:
        gen.set_state(state["generator"])  # the resumed run draws what the unbroken one would
    xyz_train = torch.from_numpy(np.ascontiguousarray(data.xyz_train))
    val_xyz = data.xyz_val[: cfg.val_frames] if len(data.xyz_val) else data.xyz_train[-cfg.val_frames:]
    system = data.meta.get("system")
    extra = {"train": asdict(cfg), "clamped_fraction": clamped, "std_nm": std,
             "frames": data.meta.get("frames"), "sources": data.meta.get("sources"),
             "world_size": world}

    def save(name: str, step: int, val: float | None):
        card = {"steps": step, "val_nll": val, "wall_time_s": elapsed0 + time.perf_counter() - t0,
                "clamped_fraction": clamped, "data": data.meta}
        checkpoint.save(out / name, model, tok.cfg, system=system, card=card, extra=extra)

    t0 = time.perf_counter()
    model.train()
    per_rank = max(1, cfg.batch_size // world)
    val = None
    for step in range(start_step, cfg.steps):
        factor = lr_factor(step, cfg)
        for opt in opts:
            for group in opt.param_groups:
                group.setdefault("base_lr", group["lr"])  # saved with the optimizer state
                group["lr"] = group["base_lr"] * factor
        idx = torch.randint(len(xyz_train), (per_rank,), generator=gen)
        xyz = rotate(xyz_train[idx], random_rotations(per_rank, gen))
        bins, _ = tok.encode(xyz)
        bins = bins.to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = _loss(ddp_model, model.bos, bins, cond.expand(per_rank))
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        for opt in opts:
            opt.step()
        done = step + 1
        is_last = done == cfg.steps
        if rank == 0 and (done % cfg.val_every == 0 or is_last):
            val = validation_nll(model, tok, val_xyz, cond, dev, bf16=bf16)
            history.append({"step": done, "train_loss": loss.item(), "val_nll": val})
            if val < best_val:
                best_val = val
                save("best", done, val)
        if rank == 0 and (done % cfg.save_every == 0 or is_last):
            save("last", done, val)
            # One file holds everything --resume needs, replaced atomically.
            tmp = state_file.with_name(state_file.name + ".tmp")
            torch.save({"step": done, "best_val": best_val, "history": json.dumps(history),
                        "elapsed_s": elapsed0 + time.perf_counter() - t0,
                        "model": model.state_dict(),
                        "optimizers": [opt.state_dict() for opt in opts],
                        "generator": gen.get_state()}, tmp)
            os.replace(tmp, state_file)
        if progress and rank == 0:
            progress(done, cfg.steps, {"loss": loss.item(), "grad_norm": float(gnorm),
                                       "val_nll": val, "lr": opts[0].param_groups[0]["lr"]})
    if world > 1:
        torch.distributed.barrier()
    wall = elapsed0 + time.perf_counter() - t0
    tokens = (cfg.steps - start_step) * per_rank * world * 3 * data.n_atoms
    summary = {"steps": cfg.steps, "best_val_nll": best_val, "history": history,
               "wall_time_s": wall, "params": model.num_params(), "clamped_fraction": clamped,
               "tokens_per_s": tokens / max(time.perf_counter() - t0, 1e-9), "device": str(dev),
               "bf16": bf16, "world_size": world}
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if world > 1:
        torch.distributed.destroy_process_group()
    return summary
