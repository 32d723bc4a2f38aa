"""Training frames resident on the training device (DESIGN §15): a step draws, rotates and
tokenizes its batch there, with no host round trip and no per-step Python over frames.

Body frame: a frame's token values never change between steps (no augmentation), so every
training frame is tokenized once, up front, and kept as int16 bins (N, T); a batch is one gather.
Centered frame: frames are kept centered, float32 (N, A, 3); each batch is rotated by uniform
random rotations drawn on the device (unit quaternions from a 4D Gaussian) and tokenized there.
One system's frames (data.FrameData); a corpus trains through the host path (batches.py).
"""

from __future__ import annotations

import torch

from .model import Conditioning, conditioning
from .tokenizer import Tokenizer


def quaternion_rotations(n: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """(n, 3, 3) rotations uniform on SO(3), on the generator's device: a normalized 4D Gaussian
    is a uniform unit quaternion, and q and -q give the same rotation."""
    q = torch.randn(n, 4, generator=generator, device=generator.device, dtype=dtype)
    w, x, y, z = (q / q.norm(dim=1, keepdim=True)).unbind(1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], dim=1).view(n, 3, 3)


class ResidentFrames:
    """The training frames of one system on `device`; `batch` draws a tokenized batch there."""

    def __init__(self, tok: Tokenizer, data, device: torch.device, chunk: int = 8192):
        self.tok, self.features, self.device = tok, data.features, device
        self.cond: Conditioning = conditioning(data.features, frame=tok.cfg.frame).to(device)
        self.fixed = tok.cfg.frame != "centered"  # a body frame: tokens fixed per frame
        xyz = torch.from_numpy(data.xyz_train)  # (N, A, 3) nm
        if self.fixed:
            parts = [tok.encode_system(xyz[i:i + chunk], data.features)[0].to(torch.int16)
                     for i in range(0, len(xyz), chunk)]  # n_bins <= 32768 fits int16
            self.bins = torch.cat(parts).to(device)  # (N, T)
            self.n_frames = len(self.bins)
        else:
            self.xyz = (xyz - xyz.mean(dim=1, keepdim=True)).to(device)  # (N, A, 3) centered
            self.n_frames = len(self.xyz)

    @property
    def n_tokens(self) -> int:
        return self.cond.n_tokens

    def batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, Conditioning]:
        """(bins (n, T) long, conditioning (1, T)) of n frames drawn uniformly with replacement;
        `generator` lives on the device."""
        idx = torch.randint(self.n_frames, (n,), generator=generator, device=self.device)
        if self.fixed:
            return self.bins[idx].long(), self.cond
        x = self.xyz[idx] @ quaternion_rotations(n, generator).transpose(1, 2)  # (n, A, 3)
        bins, _, _ = self.tok.encode_system(x, self.features, center=True)
        return bins, self.cond
