"""Coordinates <-> bins, and the Jacobian that turns bin probabilities into a density in nm.

The config's `frame` (frames.py) says what the tokens are: "centered" (the paper's, described
here) or "body" (3A - 6 coordinates in the frame of three bonded atoms, DESIGN §17; its extra
log-Jacobian comes from `frames.BodyFrame`). `encode_system` / `decode_system` go through the
frame and return that per-sample term; `encode` / `decode` are the centered value path.

A frame is normalized (centroid removed, divided by a scalar `std` in nm), flattened atom-major
as (x, y, z) per atom, so token j is axis j % 3 of atom j // 3, and each value in [-a, a] is put
in one of `n_bins` equal bins of width h = 2a / n_bins. Sampling draws a bin k and then the value
-a + (k + U) h with U ~ Uniform(0, 1), so the model's density in nm is

    log q(x) = sum_j log P_j(k_j) + log_jacobian(n_atoms),   log_jacobian = -3A log h - 3A log std.

q is piecewise constant on the bins and lives on the box [-a, a]^{3A} * std: values outside are
clamped to the edge bin when encoding (reported as `clamped_fraction`, which must stay tiny).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .frames import get_frame
from .peptide import AtomFeatures

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class TokenizerConfig:
    n_bins: int = 1024  # L
    a: float = 3.0  # half-width of the box, in units of std
    std: float = 1.0  # nm per normalized unit
    frame: str = "centered"  # frames.FRAMES; checkpoints older than the body frame are centered

    def __post_init__(self):
        if self.n_bins < 2 or self.a <= 0 or self.std <= 0:
            raise ValueError(f"invalid tokenizer config {self}: need n_bins >= 2, a > 0, std > 0")
        get_frame(self.frame)  # ValueError naming the frames

    @property
    def h(self) -> float:
        """Bin width in normalized units."""
        return 2.0 * self.a / self.n_bins


def _as_float64(xyz: ArrayLike) -> torch.Tensor:
    if isinstance(xyz, np.ndarray):
        return torch.from_numpy(np.asarray(xyz, dtype=np.float64))
    return xyz.detach().to(torch.float64)


class Tokenizer:
    """Stateless apart from its config; all arithmetic is float64 so encode/decode agree exactly."""

    def __init__(self, cfg: TokenizerConfig = TokenizerConfig()):
        self.cfg = cfg

    @property
    def h(self) -> float:
        return self.cfg.h

    @staticmethod
    def fit_std(xyz: ArrayLike, features: AtomFeatures | None = None,
                frame: str = "centered") -> float:
        """Scalar std (nm) of the token values: sqrt(mean of value^2) over frames and tokens
        (centered frame: of the centered coordinates; body frame: needs the system's features)."""
        if frame == "centered":
            x = _as_float64(xyz)  # (B, A, 3)
            x = x - x.mean(dim=1, keepdim=True)
            return float(x.pow(2).mean().sqrt())
        values, _ = get_frame(frame).values(xyz, features)
        return float(values.pow(2).mean().sqrt())

    def normalize(self, xyz: ArrayLike, center: bool = True) -> torch.Tensor:
        """(B, A, 3) nm -> (B, A, 3) float64 normalized; centroid removed per frame if `center`."""
        x = _as_float64(xyz)
        if center:
            x = x - x.mean(dim=1, keepdim=True)
        return x / self.cfg.std

    def encode(self, xyz: ArrayLike, center: bool = True) -> tuple[torch.Tensor, float]:
        """(B, A, 3) nm -> (bins (B, 3A) long, clamped_fraction).

        `center=False` encodes the coordinates as given; use it to score samples exactly, since
        the model's density lives on all of R^{3A} (samples are not exactly centered).
        """
        return self._bins(self.normalize(xyz, center=center).flatten(1))  # (B, 3A), atom-major

    def encode_system(self, xyz: ArrayLike, features: AtomFeatures, center: bool = True
                      ) -> tuple[torch.Tensor, float, torch.Tensor]:
        """(B, A, 3) nm -> (bins (B, T), clamped_fraction, frame log-Jacobian (B,) float64)
        through the config's frame; T = 3A (centered) or 3A - 6 (body)."""
        values, log_jac = get_frame(self.cfg.frame).values(xyz, features, center=center)
        bins, clamped = self._bins(values / self.cfg.std)
        return bins, clamped, log_jac

    def decode_system(self, bins: torch.Tensor, features: AtomFeatures,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) bins -> (xyz (B, A, 3) float32 nm, frame log-Jacobian (B,) float64). The body
        frame draws a uniform rotation per sample from `generator` after the dequantization."""
        values = self.decode(bins, generator).flatten(1)  # (B, T) nm, each inside its bin
        xyz, log_jac = get_frame(self.cfg.frame).positions(values, features, generator)
        return xyz.float(), log_jac.to(values.device)

    def log_jacobian_tokens(self, n_tokens: int) -> float:
        """log q(values) - sum_j log P_j(k_j) for `n_tokens` token values in nm."""
        return -n_tokens * (math.log(self.h) + math.log(self.cfg.std))

    def _bins(self, z: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Normalized values (B, T) -> (bins (B, T) long, clamped fraction)."""
        a, n = self.cfg.a, self.cfg.n_bins
        clamped = float((z.abs() > a).double().mean()) if z.numel() else 0.0
        return torch.floor((z + a) / self.h).long().clamp_(0, n - 1), clamped

    def decode(self, bins: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3A) bins -> (B, A, 3) float32 torch tensor in nm, not centered.

        With a `generator`, values are uniformly dequantized, -a + (k + U) h (what sampling needs);
        without one, they are the bin centers (deterministic; round-trip error <= h/2). Either way
        each value lies strictly inside its bin after the float32 cast, so re-encoding with
        `center=False` gives back `bins`: the rare uniform draw that float32 rounding pushes onto
        a bin edge (probability ~1e-4 per coordinate at L=1024) is moved to the bin's center.
        """
        device = bins.device if generator is None else generator.device
        bins = bins.to(device)
        if generator is None:
            u = torch.full(bins.shape, 0.5, device=device, dtype=torch.float64)
        else:
            u = torch.rand(bins.shape, generator=generator, device=device, dtype=torch.float64)
        x = self._to_nm(bins, u)  # (B, 3A)
        again, _ = self.encode(x.view(x.shape[0], -1, 3), center=False)
        bad = again != bins
        if bool(bad.any()):
            x = torch.where(bad, self._to_nm(bins, torch.full_like(u, 0.5)), x)
        return x.view(x.shape[0], -1, 3)

    def _to_nm(self, bins: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return ((-self.cfg.a + (bins.double() + u) * self.h) * self.cfg.std).float()

    def log_jacobian(self, n_atoms: int) -> float:
        """log q(x) - sum_j log P_j(k_j) for a system of `n_atoms` atoms (x in nm)."""
        return -3 * n_atoms * (math.log(self.h) + math.log(self.cfg.std))

    def nats_per_coordinate(self, cross_entropy: float) -> float:
        """Mean bin cross-entropy (nats/token) -> NLL of the density, nats per nm-coordinate.

        -log q(x) / 3A = mean_j [-log P_j(k_j)] + log h + log std.
        """
        return float(cross_entropy) + math.log(self.h) + math.log(self.cfg.std)
