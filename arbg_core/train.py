"""Training loop: teacher-forced cross-entropy over bins, one process or torchrun (DDP).

Every step draws a batch of frames, rotates each one at random about its centroid, tokenizes,
and minimizes the mean cross-entropy over real (unpadded) tokens. Muon on the weight matrices
and AdamW on the rest (or AdamW throughout) with linear warm-up and cosine decay, gradient
clipping, bf16 autocast where the device has fast bf16 matmuls (CUDA; CPUs where a timed bf16
matmul beats fp32, e.g. AMX).
Rank 0 validates (NLL in nats per nm-coordinate of the continuous density), keeps `best/` and
`last/` checkpoints (safetensors + JSON) and a `state/` (train_state.py) that `--resume` continues from.

One loop serves both models: `train` draws from one system's `FrameData` (std fitted to its
frames, a = 3), `train_transferable` from a `Corpus` of many sequences in right-padded batches
(a fixed std, a = 4.5, as in the paper), and stores the lengths and termini it covers.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from . import checkpoint
from .batches import clamped_fraction
from .data import Corpus, FrameData, prepare_corpus
from .files import write_json
from .flags import option
from .loop import MOMENTS, Run, cpu_bf16_is_faster, lr_factor  # noqa: F401 (train's API)
from .model import ArBG, ModelConfig
from .muon import Muon
from .tokenizer import Tokenizer, TokenizerConfig

A_SINGLE, A_TRANSFERABLE = 3.0, 4.5  # box half-width in units of std (paper)
# The transferable model's fixed std: its box, 4.5 * 0.25 = 1.125 nm from the centroid, holds
# every atom of the most extended dipeptide (RR built fully extended: 0.92 nm) at any rotation;
# fitted per-system stds of dipeptides range over 0.15..0.31 nm.
TRANSFERABLE_STD_NM = 0.25


OPTIMIZERS = ("adamw", "muon")  # TrainConfig.optimizer
SWITCHES = ("auto", "on", "off")  # TrainConfig.bf16, .compile, .resident
BF16_MODES = SWITCHES


@dataclass(frozen=True)
class TrainConfig:
    size: str = option("small", "model size preset (model.SIZES)")
    n_bins: int | None = option(None, "bins per coordinate; None: the size preset's")
    a: float | None = option(None, "box half-width in stds; None: 3 (one system), 4.5 (a corpus)")
    std_nm: float | None = option(None, "scale, nm; None: fitted (one system), 0.25 (a corpus)")
    steps: int = option(10_000, "optimizer steps")
    batch_size: int = option(256, "frames per step, all ranks together")
    lr: float = option(2e-3, "peak learning rate (AdamW; Muon too unless muon_lr is set): "
                       "2e-3 is the measured Muon recipe; AdamW was measured at 1e-3")
    muon_lr: float | None = option(None, "Muon's peak learning rate; None: lr (RMS-matched)")
    weight_decay: float = option(0.01, "decoupled weight decay")
    warmup_steps: int = option(200, "steps of linear learning-rate warm-up")
    min_lr_ratio: float = option(0.05, "final learning rate of the cosine decay, times lr")
    grad_clip: float = option(1.0, "gradient-norm clip")
    optimizer: str = option("muon", "muon (Muon on 2D block weights, AdamW on the rest; 26x the "
                           "ESS of AdamW at equal steps, README) | adamw")
    bf16: str = option("auto", "auto (CUDA with bf16, or a CPU with fast bf16 matmuls) | on | off")
    val_every: int = option(500, "steps between validations; the best is kept in best/")
    val_frames: int = option(2048, "validation frames")
    save_every: int = option(500, "steps between saves of last/ and state/")
    seed: int = option(0, "seed of the initial weights and of the batches")
    init: str | None = option(None, "checkpoint whose weights start the run (fresh optimizer)")
    frame: str = option("body", "what the tokens are: body (3A - 6 coordinates in the frame of "
                       "three bonded atoms, a uniform rotation when sampling; 6-20x the ESS of "
                       "centered at equal compute, README) | centered (all 3A coordinates, "
                       "random rotations in training; the paper's) | body-heavy (body, heavy "
                       "atoms first)")
    budget_s: float | None = option(None, "wall-clock seconds this process may run: it stops "
                                   "cleanly before (last/, best/, state/ saved); --resume goes on")
    log_every: int = option(1, "steps between progress reports (each reads the loss back from "
                           "the device: use ~50 on a GPU)")
    resident: str = option("auto", "keep the training frames on the device and draw, rotate and "
                          "tokenize batches there: auto (CUDA, one system) | on | off")
    compile: str = option("auto", "torch.compile the training step: auto (CUDA) | on | off")
    moments: str = option("fp32", "dtype of the optimizer moments in state/: fp32 (exact resume) "
                         "| bf16 (half the size, for the device transfer limit)")

    def __post_init__(self):
        """Every number in range (`arbg train` checks each flag through this, checks.py)."""
        from .checks import (COUNT, FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_INT, SEED, Range,
                             check, one_of, optional)
        from .frames import FRAMES
        from .model import SIZES

        # a, std_nm, muon_lr: None means "the default" and 0 is refused (no `or` can mistake it)
        check(self, n_bins=optional(Range(int, 2, 2**20)), a=optional(POSITIVE),
              std_nm=optional(POSITIVE), steps=POSITIVE_INT, batch_size=POSITIVE_INT,
              lr=NON_NEGATIVE, muon_lr=optional(POSITIVE), weight_decay=NON_NEGATIVE,
              warmup_steps=COUNT, min_lr_ratio=FRACTION, grad_clip=POSITIVE,
              val_every=POSITIVE_INT, val_frames=POSITIVE_INT, save_every=POSITIVE_INT, seed=SEED,
              budget_s=optional(NON_NEGATIVE), log_every=POSITIVE_INT)
        for name, choices in (("size", SIZES), ("optimizer", OPTIMIZERS), ("bf16", BF16_MODES),
                              ("frame", FRAMES), ("resident", SWITCHES), ("compile", SWITCHES),
                              ("moments", MOMENTS)):
            one_of(self, name, choices)


def _optimizers(model: ArBG, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    return optimizers(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.muon_lr)


def optimizers(model: ArBG, name: str, lr: float, weight_decay: float,
               muon_lr: float | None = None) -> list[torch.optim.Optimizer]:
    """"adamw": AdamW on every parameter; "muon": Muon on the 2D block weights (at muon_lr,
    None: lr, RMS-matched to AdamW) and AdamW on the rest."""
    fused = next(model.parameters()).is_cuda  # one kernel for all parameters on a GPU
    if name == "adamw":
        return [torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                                  betas=(0.9, 0.95), fused=fused)]
    if name == "muon":
        matrices = [p for n, p in model.named_parameters() if p.ndim == 2 and ".blocks." in f".{n}"]
        ids = {id(p) for p in matrices}
        rest = [p for p in model.parameters() if id(p) not in ids]
        return [Muon(matrices, lr=muon_lr or lr, weight_decay=weight_decay,
                     adjust_lr_fn="match_rms_adamw", fp32_iteration=not fused),
                torch.optim.AdamW(rest, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95),
                                  fused=fused)]
    raise ValueError(f"unknown optimizer {name!r}; choose {' or '.join(OPTIMIZERS)}")


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


def train(data: FrameData, out_dir: str | Path, cfg: TrainConfig = TrainConfig(),
          resume: bool = False, device: str = "auto",
          progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train a single-system model on `data`; returns a summary dict (also written to out_dir)."""
    if len(data.xyz_train) == 0:
        raise ValueError("no training frames")
    std = cfg.std_nm or Tokenizer.fit_std(data.xyz_train, data.features, cfg.frame)
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
    tok = Tokenizer(TokenizerConfig(n_bins=mcfg.n_bins, a=a, std=std, frame=cfg.frame))
    clamped = clamped_fraction(tok, source)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = ArBG(mcfg).to(dev)
    if cfg.init:
        _init_from(model, tok, cfg.init)
    run = Run(cfg, out, model, _optimizers(model, cfg), tok, dev, rank, world, system,
               provenance, clamped, _fingerprint(provenance, std, cfg, mcfg),
               {"train": asdict(cfg), "clamped_fraction": clamped, "std_nm": std,
                "world_size": world} | extra)
    state = run.resume() if resume else None
    run.start(state, source)  # after resume: bf16's CPU probe draws from the global RNG
    for step in range(run.start_step, cfg.steps):
        run.step(step, source, vals, progress)
        if run.out_of_time(step + 1):
            run.stop_early(step + 1, vals)
            break
    if world > 1:
        torch.distributed.barrier()
    summary = run.summary()
    if rank == 0:
        write_json(out / "summary.json", summary)
    if world > 1:
        torch.distributed.destroy_process_group()
    return summary


def _fingerprint(provenance: dict, std: float, cfg: TrainConfig, mcfg: ModelConfig) -> str:
    """What a resumed run must share with the run it continues (std is fitted to the frames)."""
    same = {"frames": provenance.get("frames"), "std_nm": float(std), "size": cfg.size,
            "n_bins": mcfg.n_bins}
    if cfg.frame != "centered":  # runs from before the body frame resume as they are
        same["frame"] = cfg.frame
    return json.dumps(same, sort_keys=True)
