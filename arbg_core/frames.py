"""The body frame (DESIGN §17): a conformation without its position and orientation.

Three bonded atoms a, b, c of the first residue define the frame: a at the origin, b on +x,
c in the xy half-plane with y > 0. In that frame a is (0, 0, 0), b is (r, 0, 0) and c is
(c_x, c_y, 0) with c_y = rho > 0, so a conformation has 3A - 6 free coordinates: b_x, c_x, c_y,
then the xyz of every other atom. A model of those (`q_frame`) and a uniform (Haar) rotation R
give a density of x = R c on the conformations with a at the origin:

    log q(x) = log q_frame(c) - 2 log r - log rho - log(8 pi^2)

(the map (R, c) -> x has Jacobian r^2 rho; the rotations have volume 8 pi^2). Frames with
r <= 0 or rho <= 0 lie outside the parametrization (density 0).

Frame atoms by rule, for every sequence the builder makes: an amino acid as the first residue
(either termini, glycine and proline included) gives N, CA, C; an ACE cap gives CH3, C, O.
All arrays are (B, A, 3) in nm; arithmetic in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .peptide import ATOM_NAMES, ELEMENTS, RESIDUE_TYPES, AtomFeatures

LOG_ROTATION_VOLUME = math.log(8.0 * math.pi ** 2)  # Haar measure of SO(3)
FRAME_NAMES = {"ACE": ("CH3", "C", "O")}  # any other first residue: N, CA, C
DEFAULT_FRAME_NAMES = ("N", "CA", "C")


def frame_atoms(features: AtomFeatures) -> tuple[int, int, int]:
    """Indices (a, b, c) of the frame atoms of a system (rule in the module doc), from the
    per-atom features the model sees (so a prepared dataset needs no topology)."""
    first = np.flatnonzero(np.asarray(features.residue_index) == 0)
    if len(first) == 0:
        raise ValueError("a system without atoms has no body frame")
    residue = RESIDUE_TYPES[int(features.residue_type[first[0]])]
    names = FRAME_NAMES.get(residue, DEFAULT_FRAME_NAMES)
    by_name = {ATOM_NAMES[int(features.atom_name[i])]: int(i) for i in first}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"first residue {residue} has no atom {', '.join(missing)}: "
                         "no body frame for this system")
    return tuple(by_name[n] for n in names)


def token_atoms_and_axes(n_atoms: int, frame: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Which atom and axis each of the 3A - 6 body-frame tokens is: b_x, c_x, c_y, then the
    other atoms in topology order, x y z each. Returns (atom (T,), axis (T,)) int64."""
    a, b, c = frame
    if len({a, b, c}) != 3 or not all(0 <= i < n_atoms for i in frame):
        raise ValueError(f"frame atoms {frame} must be three distinct atoms of {n_atoms}")
    rest = np.array([i for i in range(n_atoms) if i not in frame], dtype=np.int64)
    atom = np.concatenate([[b, c, c], np.repeat(rest, 3)]).astype(np.int64)
    axis = np.concatenate([[0, 0, 1], np.tile(np.arange(3), len(rest))]).astype(np.int64)
    return atom, axis


def _as64(x) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.asarray(x, np.float64))
    return torch.as_tensor(x).detach().to(torch.float64)


def canonicalize(xyz, frame: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """xyz (B, A, 3) -> (c (B, A, 3) in the body frame, R (B, 3, 3)) with xyz = c @ R^T + xyz_a.

    R's columns are the frame's axes in lab coordinates: e1 along b - a, e2 in the plane of
    a, b, c towards c, e3 = e1 x e2 (a proper rotation). Degenerate frames (r or rho zero) give
    NaN; `log_jacobian` gives them -inf.
    """
    x = _as64(xyz)
    a, b, c = frame
    x = x - x[:, a:a + 1]  # a at the origin
    e1 = x[:, b] / x[:, b].norm(dim=-1, keepdim=True)
    v = x[:, c] - (x[:, c] * e1).sum(-1, keepdim=True) * e1
    e2 = v / v.norm(dim=-1, keepdim=True)
    e3 = torch.linalg.cross(e1, e2)
    R = torch.stack([e1, e2, e3], dim=-1)  # (B, 3, 3), columns e1 e2 e3
    return x @ R, R


def rebuild(c, R) -> torch.Tensor:
    """Body-frame coordinates c (B, A, 3) and rotations R (B, 3, 3) -> lab xyz (B, A, 3)."""
    return _as64(c) @ _as64(R).transpose(1, 2)


def log_jacobian(c, frame: tuple[int, int, int]) -> torch.Tensor:
    """log q(x) - log q_frame(c) = -2 log r - log rho - log(8 pi^2), per frame: (B,) float64.
    -inf where r <= 0 or rho <= 0 (outside the parametrization)."""
    c = _as64(c)
    _, b, cc = frame
    r, rho = c[:, b, 0], c[:, cc, 1]
    ok = (r > 0) & (rho > 0)
    out = -2.0 * torch.log(r.clamp_min(1e-300)) - torch.log(rho.clamp_min(1e-300))
    return torch.where(ok, out - LOG_ROTATION_VOLUME, torch.full_like(out, -math.inf))


def random_rotations(n: int, generator: torch.Generator | None = None,
                     device=None) -> torch.Tensor:
    """n rotations (n, 3, 3) float64, uniform (Haar) on SO(3): QR of a Gaussian matrix with the
    signs fixed so the distribution is exactly uniform, then det +1."""
    g = torch.randn(n, 3, 3, generator=generator, dtype=torch.float64,
                    device=device if generator is None else generator.device)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    flip = torch.det(q) < 0
    q[flip, :, 0] = -q[flip, :, 0]  # O(3) -> SO(3): still Haar on SO(3)
    return q


# ------------------------------------------------------------------- the two frames a model uses
#
# A frame maps a conformation xyz (B, A, 3) nm to the values its tokens stand for (B, T) nm and
# back, with the log-Jacobian of that map: log q(x) = log q_tokens(values) + log_jac. The
# tokenizer bins the values; the model sees which atom and axis each token is.


class CenteredFrame:
    """The paper's frame: all 3A coordinates, atom-major (token j = axis j % 3 of atom j // 3).
    Orientation is learned from random rotations in training."""

    name = "centered"

    def tokens(self, features: AtomFeatures) -> tuple[np.ndarray, np.ndarray]:
        t = np.arange(3 * features.n_atoms, dtype=np.int64)
        return t // 3, t % 3

    def values(self, xyz, features: AtomFeatures, center: bool = False):
        """xyz (B, A, 3) -> (values (B, 3A) float64 nm, log_jac (B,) = 0). center: remove each
        frame's centroid first (data frames, whose position is arbitrary)."""
        x = _as64(xyz)
        if center:
            x = x - x.mean(dim=1, keepdim=True)
        return x.flatten(1), torch.zeros(x.shape[0], dtype=torch.float64)

    def positions(self, values, features: AtomFeatures, generator=None):
        """values (B, 3A) -> (xyz (B, A, 3) float64 nm, log_jac (B,) = 0)."""
        v = _as64(values)
        return v.view(v.shape[0], -1, 3), torch.zeros(v.shape[0], dtype=torch.float64)


class BodyFrame:
    """DESIGN §17: 3A - 6 coordinates in the frame of three bonded atoms, a uniform rotation on
    top. Samples have the first frame atom at the origin. `heavy_first` (the frame "body-heavy",
    a recipe-ablation variant): after the frame, every heavy atom in topology order, then the
    hydrogens, so residues' tokens are no longer contiguous (no SMC over residue blocks)."""

    def __init__(self, heavy_first: bool = False):
        self.heavy_first = heavy_first
        self.name = "body-heavy" if heavy_first else "body"

    def _token_map(self, features: AtomFeatures) -> tuple[np.ndarray, np.ndarray]:
        frame = frame_atoms(features)
        atom, axis = token_atoms_and_axes(features.n_atoms, frame)
        if self.heavy_first:  # a stable sort of the atoms after the frame: heavy (0), H (1)
            hydrogen = np.asarray(features.element)[atom[3:]] == ELEMENTS.index("H")
            order = np.concatenate([np.arange(3), 3 + np.argsort(hydrogen, kind="stable")])
            atom, axis = atom[order], axis[order]
        return atom, axis

    def tokens(self, features: AtomFeatures) -> tuple[np.ndarray, np.ndarray]:
        return self._token_map(features)

    def values(self, xyz, features: AtomFeatures, center: bool = False):
        """xyz (B, A, 3) anywhere in space -> (values (B, 3A - 6) float64 nm in the body frame,
        log_jac (B,)). `center` has no effect: the frame removes position and orientation."""
        frame = frame_atoms(features)
        c, _ = canonicalize(xyz, frame)
        atom, axis = self._token_map(features)
        return c[:, atom, axis], log_jacobian(c, frame)

    def positions(self, values, features: AtomFeatures, generator=None):
        """values (B, 3A - 6) -> (xyz (B, A, 3) float64 nm, rotated uniformly at random with
        `generator`, first frame atom at the origin; log_jac (B,))."""
        frame = frame_atoms(features)
        atom, axis = self._token_map(features)
        v = _as64(values)
        c = torch.zeros(v.shape[0], features.n_atoms, 3, dtype=torch.float64, device=v.device)
        c[:, atom, axis] = v
        R = random_rotations(v.shape[0], generator, device=v.device)
        return rebuild(c, R), log_jacobian(c, frame)


FRAMES = {"centered": CenteredFrame(), "body": BodyFrame(), "body-heavy": BodyFrame(True)}


def get_frame(name: str):
    """The frame called `name` ("centered" or "body"); ValueError naming the choices otherwise."""
    if name not in FRAMES:
        raise ValueError(f"unknown frame {name!r}; choose one of {', '.join(FRAMES)}")
    return FRAMES[name]
