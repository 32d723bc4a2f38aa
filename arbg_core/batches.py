"""Frame groups -> training batches: tokenized, right-padded, randomly rotated; their NLL.

A frame group is `(features, xyz (n, A, 3) nm)`: frames of one system (`FrameData.sample_batch`
and `Corpus.sample_batch` return lists of them). `encode_batch` turns groups into bins (B, T) and
conditioning (B, T) for `model.train_loss`; `validation_nll` is the mean NLL of the continuous
density over groups, in nats per nm-coordinate.
"""

from __future__ import annotations

import torch

from .data import random_rotations, rotate
from .model import ArBG, Conditioning, conditioning, train_loss
from .tokenizer import Tokenizer


def encode_batch(tok: Tokenizer, groups, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, Conditioning, float]:
    """Frame groups [(features, xyz (n, A, 3) nm)] -> bins (B, T), conditioning (B, T), clamped
    fraction; systems shorter than T are right-padded (bin 0, valid False). Centered frame: with
    a generator, each frame is first rotated at random about its centroid (training); without,
    as given. Body frame: no rotations (the frame removes the orientation)."""
    sizes = [len(xyz) for _, xyz in groups]
    rotate_frames = generator is not None and tok.cfg.frame == "centered"
    rotations = random_rotations(sum(sizes), generator) if rotate_frames else None
    cond = conditioning([f for f, _ in groups], frame=tok.cfg.frame)
    bins = torch.zeros(sum(sizes), cond.n_tokens, dtype=torch.long)
    clamped, first = 0.0, 0
    for (features, xyz), n in zip(groups, sizes):
        xyz = torch.as_tensor(xyz)
        if rotations is not None:
            xyz = rotate(xyz, rotations[first:first + n])
        b, fraction, _ = tok.encode_system(xyz, features)  # (n, T of this system)
        bins[first:first + n, :b.shape[1]] = b
        clamped += fraction * b.numel()
        first += n
    which = torch.repeat_interleave(torch.arange(len(groups)), torch.tensor(sizes))
    cond = cond.index_select(which)
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


def clamped_fraction(tok: Tokenizer, source) -> float:
    """Clamping as training sees it: 20 batches of 1000 random frames, randomly rotated.
    `source`: a data.FrameData or data.Corpus (anything with `sample_batch(n, generator)`)."""
    g = torch.Generator().manual_seed(0)
    return sum(encode_batch(tok, source.sample_batch(1000, g), g)[2] for _ in range(20)) / 20
