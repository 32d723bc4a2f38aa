"""Training loop: teacher-forced cross-entropy over bins, one process or torchrun (DDP).

Every step draws a batch of frames, rotates each one at random about its centroid, tokenizes,
and minimizes the mean cross-entropy over real (unpadded) tokens. AdamW (or Muon on the weight
matrices) with linear warm-up and cosine decay, gradient clipping, bf16 autocast where the
device has fast bf16 matmuls (CUDA; CPUs where a timed bf16 matmul beats fp32, e.g. AMX).
Rank 0 validates (NLL in nats per nm-coordinate of the continuous density), keeps `best/` and
`last/` checkpoints (safetensors + JSON) and a `train_state.pt` that `--resume` continues from.

One loop serves both models: `train` draws from one system's `FrameData` (std fitted to its
frames, a = 3), `train_transferable` from a `Corpus` of many sequences in right-padded batches
(a fixed std, a = 4.5, as in the paper), and stores the lengths and termini it covers.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from . import checkpoint
from .data import Corpus, FrameData, prepare_corpus, random_rotations, rotate
from .model import ArBG, Conditioning, ModelConfig, conditioning, train_loss
from .tokenizer import Tokenizer, TokenizerConfig

A_SINGLE, A_TRANSFERABLE = 3.0, 4.5  # box half-width in units of std (paper)
# The transferable model's fixed std: its box, 4.5 * 0.25 = 1.125 nm from the centroid, holds
# every atom of the most extended dipeptide (RR built fully extended: 0.92 nm) at any rotation;
# fitted per-system stds of dipeptides range over 0.15..0.31 nm.
TRANSFERABLE_STD_NM = 0.25


OPTIMIZERS = ("adamw", "muon")
BF16_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class TrainConfig:
    size: str = "small"
    n_bins: int | None = None  # None: the size preset's
    a: float | None = None  # None: A_SINGLE for one system, A_TRANSFERABLE for a corpus
    std_nm: float | None = None  # None: fitted to one system's frames, TRANSFERABLE_STD_NM
    steps: int = 10_000
    batch_size: int = 256
    lr: float = 1e-3
    muon_lr: float | None = None  # None: lr (Muon's update is RMS-matched to AdamW's)
    weight_decay: float = 0.01
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    optimizer: str = "adamw"  # "adamw" | "muon" (Muon on 2D block weights, AdamW on the rest)
    bf16: str = "auto"  # "auto" (CUDA with bf16, or a CPU with fast bf16 matmuls) | "on" | "off"
    val_every: int = 500
    val_frames: int = 2048
    save_every: int = 500
    seed: int = 0
    init: str | None = None  # checkpoint folder whose weights start the run (fresh optimizer)


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
    if device.type == "cpu":
        return cpu_bf16_is_faster()
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


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


def _setup(device: str) -> tuple[int, int, int, torch.device]:
    """(rank, world size, local rank, device); joins the torchrun process group if there is one."""
    rank, world, local_rank = (int(os.environ.get(k, d)) for k, d in
                               (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world, local_rank, dev


def encode_batch(tok: Tokenizer, groups, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, Conditioning, float]:
    """Frame groups [(features, xyz (n, A, 3) nm)] -> bins (B, T), conditioning (B, T), clamped
    fraction; systems shorter than T are right-padded (bin 0, valid False). With a generator,
    each frame is first rotated at random about its centroid (training); without, as given."""
    sizes = [len(xyz) for _, xyz in groups]
    rotations = random_rotations(sum(sizes), generator) if generator is not None else None
    bins = torch.zeros(sum(sizes), 3 * max(f.n_atoms for f, _ in groups), dtype=torch.long)
    clamped, first = 0.0, 0
    for (_, xyz), n in zip(groups, sizes):
        xyz = torch.as_tensor(xyz)
        if rotations is not None:
            xyz = rotate(xyz, rotations[first:first + n])
        b, fraction = tok.encode(xyz)  # (n, 3A)
        bins[first:first + n, :b.shape[1]] = b
        clamped += fraction * b.numel()
        first += n
    which = torch.repeat_interleave(torch.arange(len(groups)), torch.tensor(sizes))
    cond = conditioning([f for f, _ in groups]).index_select(which)
    return bins, cond, clamped / max(int(cond.valid.sum()), 1)


@torch.no_grad()
def validation_nll(model: ArBG, tok: Tokenizer, groups, device, batch_size=512,
                   bf16=False) -> float:
    """Mean NLL of the continuous density on frame groups [(features, xyz)], nats per
    nm-coordinate over all their coordinates (no rotation)."""
    model.eval()
    total, count = 0.0, 0
    for features, xyz in groups:
        for i in range(0, len(xyz), batch_size):
            bins, cond, _ = encode_batch(tok, [(features, xyz[i:i + batch_size])])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = train_loss(model, bins.to(device), cond.to(device))
            total += loss.item() * bins.numel()
            count += bins.numel()
    model.train()
    return tok.nats_per_coordinate(total / max(count, 1))


def train(data: FrameData, out_dir: str | Path, cfg: TrainConfig = TrainConfig(),
          resume: bool = False, device: str = "auto",
          progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train a single-system model on `data`; returns a summary dict (also written to out_dir)."""
    if len(data.xyz_train) == 0:
        raise ValueError("no training frames")
    std = cfg.std_nm or Tokenizer.fit_std(data.xyz_train)
    extra = {"frames": data.meta.get("frames"), "sources": data.meta.get("sources")}
    return _fit(data, {"val_nll": data.validation_frames(cfg.val_frames)}, out_dir, cfg,
                a=cfg.a or A_SINGLE, std=std, system=data.meta.get("system"), extra=extra,
                provenance=data.meta, resume=resume, device=device, progress=progress)


def train_transferable(corpus: Corpus | str | Path, out_dir: str | Path,
                       cfg: TrainConfig = TrainConfig(), resume: bool = False,
                       device: str = "auto",
                       progress: Callable[[int, int, dict], None] | None = None,
                       stride: int = 1, corpus_dir: str | Path | None = None) -> dict:
    """Train a sequence-conditioned model on the train sequences of a corpus.

    `corpus`: a data.Corpus, its folder, or an `arbg md --sequences` folder, which local rank 0
    of every node first prepares into `corpus_dir` (default OUT/corpus) with `stride`.
    Validation: the val frames of the training sequences (`val_nll`, which picks `best/`) and,
    where the corpus has val sequences, of those never-trained ones (`val_unseen_nll`).
    """
    _, world, local_rank, _ = _setup(device)
    if not isinstance(corpus, Corpus):
        root = Path(corpus)
        if (root / "manifest.json").is_file() and not (root / "corpus.json").is_file():
            target = Path(corpus_dir) if corpus_dir is not None else Path(out_dir) / "corpus"
            if local_rank == 0:
                prepare_corpus(root, target, stride=stride)
            if world > 1:
                torch.distributed.barrier()
            root = target
        corpus = Corpus(root)
    vals = {"val_nll": corpus.validation_frames(cfg.val_frames, "train")}
    if corpus.sequences("val", "val"):
        vals["val_unseen_nll"] = corpus.validation_frames(cfg.val_frames, "val")
    described = corpus.describe()
    extra = {"lengths": list(corpus.lengths("train")), "termini": corpus.termini,
             "preset": corpus.preset, "sequences": described["sequences"]["train"],
             "frames": described["frames"]}
    return _fit(corpus, vals, out_dir, cfg, a=cfg.a or A_TRANSFERABLE,
                std=cfg.std_nm or TRANSFERABLE_STD_NM, system=None, extra=extra,
                provenance=described, resume=resume, device=device, progress=progress)


def _init_from(model: ArBG, tok: Tokenizer, path: str | Path) -> None:
    """Start from another checkpoint's weights (a second, annealing stage, say); its model and
    tokenizer settings must be the ones this run uses."""
    loaded = checkpoint.load(path)
    if asdict(loaded.model.cfg) != asdict(model.cfg) or loaded.tokenizer.cfg != tok.cfg:
        raise ValueError(f"--init {path}: its model or tokenizer settings differ from this run's "
                         f"({asdict(loaded.model.cfg)}, {loaded.tokenizer.cfg}; now "
                         f"{asdict(model.cfg)}, {tok.cfg})")
    model.load_state_dict(loaded.model.state_dict())


def _fit(source: FrameData | Corpus, vals: dict, out_dir, cfg: TrainConfig, *, a: float,
         std: float, system: dict | None, extra: dict, provenance: dict, resume: bool,
         device: str, progress) -> dict:
    """The loop behind `train` and `train_transferable`. `source.sample_batch` gives training
    frame groups; `vals` maps a history key to validation groups (the first one picks best/).
    A transferable model is one without a `system`."""
    rank, world, _, dev = _setup(device)
    out = Path(out_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    mcfg = ModelConfig.preset(cfg.size, n_bins=cfg.n_bins)
    tok = Tokenizer(TokenizerConfig(n_bins=mcfg.n_bins, a=a, std=std))
    # Clamping as training sees it: 20 batches of 1000 random frames, randomly rotated.
    g = torch.Generator().manual_seed(0)
    clamped = sum(encode_batch(tok, source.sample_batch(1000, g), g)[2] for _ in range(20)) / 20
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = ArBG(mcfg).to(dev)
    if cfg.init:
        _init_from(model, tok, cfg.init)
    opts = _optimizers(model, cfg)
    start_step, best_val, history, elapsed0 = 0, float("inf"), [], 0.0
    state_file = out / "train_state.pt"
    # what a resumed run must share with the run it continues (std is fitted to the frames)
    fingerprint = json.dumps({"frames": provenance.get("frames"), "std_nm": float(std),
                              "size": cfg.size, "n_bins": mcfg.n_bins}, sort_keys=True)
    if resume and state_file.exists():
        # Our own file: weights_only=True all the same (tensors, numbers and dicts only).
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        if state.get("fingerprint", fingerprint) != fingerprint:
            raise ValueError(f"{out} was trained on other data or settings ({state['fingerprint']}, "
                             f"now {fingerprint}): resume with the same --data and --size, or "
                             "start a new --out")
        model.load_state_dict(state["model"])
        for opt, s in zip(opts, state["optimizers"]):
            opt.load_state_dict(s)
        start_step, best_val = int(state["step"]), float(state["best_val"])
        history, elapsed0 = json.loads(state["history"]), float(state["elapsed_s"])
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)
    bf16 = _use_bf16(cfg, dev)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank * 7919 + (start_step if world > 1 else 0))
    if resume and state_file.exists() and world == 1:
        gen.set_state(state["generator"])  # the resumed run draws what the unbroken one would
    extra = {"train": asdict(cfg), "clamped_fraction": clamped, "std_nm": std,
             "world_size": world} | extra
    transferable = system is None
    best_key = next(iter(vals))

    def save(name: str, step: int, val: float | None):
        card = {"steps": step, "val_nll": val, "wall_time_s": elapsed0 + time.perf_counter() - t0,
                "clamped_fraction": clamped, "data": provenance}
        checkpoint.save(out / name, model, tok.cfg, system=system, card=card,
                        transferable=transferable, extra=extra)

    t0 = time.perf_counter()
    model.train()
    per_rank = max(1, cfg.batch_size // world)
    val, tokens = None, 0
    for step in range(start_step, cfg.steps):
        factor = lr_factor(step, cfg)
        for opt in opts:
            for group in opt.param_groups:
                group.setdefault("base_lr", group["lr"])  # saved with the optimizer state
                group["lr"] = group["base_lr"] * factor
        bins, cond, _ = encode_batch(tok, source.sample_batch(per_rank, gen), gen)
        bins, cond = bins.to(dev, non_blocking=True), cond.to(dev)
        tokens += int(cond.valid.sum())
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = train_loss(ddp_model, bins, cond)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        for opt in opts:
            opt.step()
        done = step + 1
        is_last = done == cfg.steps
        if rank == 0 and (done % cfg.val_every == 0 or is_last):
            nlls = {k: validation_nll(model, tok, groups, dev, bf16=bf16) for k, groups in vals.items()}
            val = nlls[best_key]
            history.append({"step": done, "train_loss": loss.item()} | nlls)
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
                        "generator": gen.get_state(), "fingerprint": fingerprint}, tmp)
            os.replace(tmp, state_file)
        if progress and rank == 0:
            progress(done, cfg.steps, {"loss": loss.item(), "grad_norm": float(gnorm),
                                       "val_nll": val, "lr": opts[0].param_groups[0]["lr"]})
    if world > 1:
        torch.distributed.barrier()
    wall = elapsed0 + time.perf_counter() - t0
    summary = {"steps": cfg.steps, "best_val_nll": best_val, "history": history,
               "wall_time_s": wall, "params": model.num_params(), "clamped_fraction": clamped,
               "tokens_per_s": tokens * world / max(time.perf_counter() - t0, 1e-9),
               "device": str(dev), "bf16": bf16, "world_size": world, "transferable": transferable}
    if transferable:
        summary |= {"lengths": extra["lengths"], "termini": extra["termini"]}
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if world > 1:
        torch.distributed.destroy_process_group()
    return summary
