"""Self-normalized importance sampling: log weights, clipping, ESS, resampling, chirality fix.

Everything here takes arrays and plain callables, never the model or OpenMM, so toy targets test
it exactly. Units: `u` is reduced energy (kT), `log_q` is the proposal log density of `xyz` in nm
coordinates (nats), `log_w = -u - log_q`. Shapes: B samples, A atoms, C chiral centers.

Chirality (DESIGN section 8): a sample whose chiral centers all match the built topology is kept
(status 0), one with all centers inverted is mirrored x -> -x (status 1; the force field is
invariant under inversion), one with mixed centers is dropped (status 2, weight 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from .files import jsonable

KEPT, MIRRORED, DROPPED = 0, 1, 2

# Neighbours of each sp3 chiral center, in a fixed order: (center, a, b, c). The sign of
# (a - center) . ((b - center) x (c - center)) is the handedness.
_CA_NEIGHBOURS = ("N", "C", "CB")  # every residue with a CB, i.e. all but glycine (and caps)
_SIDECHAIN_CENTERS = {
    "ILE": ("CB", ("CA", "CG1", "CG2")),
    "THR": ("CB", ("CA", "OG1", "CG2")),
}


# ---------------------------------------------------------------------------- weights and ESS


def log_weights(u: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """(B,) kT and (B,) nats -> (B,) float64 `log_w = -u - log_q`; +inf energy or NaN -> -inf."""
    log_w = -np.asarray(u, dtype=np.float64) - np.asarray(log_q, dtype=np.float64)
    log_w[~(log_w < np.inf)] = -np.inf  # NaN (and +inf from log_q = -inf) carry no weight
    return log_w


def clip_log_weights(log_w: np.ndarray, fraction: float = 0.002) -> tuple[np.ndarray, int]:
    """Set the top `fraction` of the finite log weights to -inf; returns (clipped copy, count).

    Exactly floor(fraction * n_finite) samples are clipped; ties go to the lower index first
    (stable sort), so the result is deterministic.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"clip fraction must be in [0, 1), got {fraction}")
    log_w = np.array(log_w, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(log_w))
    n_clip = int(np.floor(fraction * len(finite)))
    if n_clip:
        order = np.argsort(-log_w[finite], kind="stable")  # descending, ties by index
        log_w[finite[order[:n_clip]]] = -np.inf
    return log_w, n_clip


def normalized_weights(log_w: np.ndarray) -> np.ndarray:
    """(B,) log weights -> (B,) weights summing to 1 (all zeros when no weight is finite)."""
    log_w = np.asarray(log_w, dtype=np.float64)
    if not np.isfinite(log_w).any():
        return np.zeros_like(log_w)
    return np.exp(log_w - logsumexp(log_w))


def ess(log_w: np.ndarray) -> float:
    """Kish effective sample size (a count) of unnormalized log weights; 0 when none is finite."""
    if not np.isfinite(log_w).any():
        return 0.0
    return float(np.exp(2 * logsumexp(log_w) - logsumexp(2 * np.asarray(log_w, np.float64))))


# -------------------------------------------------------------------------------- resampling


def _cumulative(weights: np.ndarray) -> np.ndarray:
    c = np.cumsum(weights, dtype=np.float64)
    c /= c[-1]
    c[-1] = 1.0  # guard against round-off so every draw in [0, 1) lands on an index
    return c


def multinomial(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n i.i.d. draws of indices with probabilities `weights` (B,) -> (n,) int64."""
    return np.searchsorted(_cumulative(weights), rng.random(n), side="right").astype(np.int64)


def systematic(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Systematic resampling: one uniform offset, n evenly spaced points -> (n,) int64, sorted."""
    points = (rng.random() + np.arange(n)) / n
    return np.searchsorted(_cumulative(weights), points, side="right").astype(np.int64)


RESAMPLERS = {"multinomial": multinomial, "systematic": systematic}


def resample(log_w: np.ndarray, n: int, method: str = "systematic",
             seed: int | np.random.Generator | None = 0, *, is_log: bool = True) -> np.ndarray:
    """Indices (n,) drawn in proportion to the weights.

    `log_w` holds log weights (the default, log space everywhere); pass `is_log=False` to give
    plain non-negative weights instead. Zero-weight samples are never drawn.
    """
    if method not in RESAMPLERS:
        raise ValueError(f"unknown resampling method {method!r}; choose one of "
                         f"{', '.join(RESAMPLERS)}")
    w = normalized_weights(log_w) if is_log else np.asarray(log_w, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or not np.all(w >= 0) or not w.sum() > 0:
        raise ValueError("resampling needs a 1-D array with at least one positive weight")
    return RESAMPLERS[method](w, int(n), np.random.default_rng(seed))


# -------------------------------------------------------------------------------- chirality


def chiral_centers(topology) -> np.ndarray:
    """(C, 4) int64 atom indices (center, a, b, c) of the sp3 chiral centers of an mdtraj topology.

    Every CA with a CB (all residues but glycine) with neighbours (N, C, CB), plus the side-chain
    centers CB of Ile (CA, CG1, CG2) and Thr (CA, OG1, CG2). Order: residue by residue.
    """
    rows = []
    for res in topology.residues:
        names = {a.name: a.index for a in res.atoms}
        if all(k in names for k in ("CA",) + _CA_NEIGHBOURS):
            rows.append([names["CA"]] + [names[k] for k in _CA_NEIGHBOURS])
        center = _SIDECHAIN_CENTERS.get(res.name)
        if center is not None and all(k in names for k in (center[0],) + center[1]):
            rows.append([names[center[0]]] + [names[k] for k in center[1]])
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def handedness(xyz: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(B, A, 3) nm and (C, 4) -> (B, C) int8 signs of the triple product; 0 if degenerate/NaN."""
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim == 2:
        xyz = xyz[None]
    centers = np.asarray(centers, dtype=np.int64).reshape(-1, 4)
    p = xyz[:, centers]  # (B, C, 4, 3)
    d = p[:, :, 1:] - p[:, :, :1]  # (B, C, 3, 3) bond vectors from the center
    triple = np.einsum("bck,bck->bc", d[:, :, 0], np.cross(d[:, :, 1], d[:, :, 2]))
    return np.where(np.isfinite(triple), np.sign(triple), 0).astype(np.int8)


def fix_chirality(xyz: np.ndarray, centers: np.ndarray,
                  reference_signs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror all-inverted samples, flag mixed ones: -> (xyz_fixed (B, A, 3), status (B,) int8).

    status 0 = all centers match (kept as is), 1 = all inverted (x -> -x applied), 2 = mixed or
    degenerate (dropped; coordinates left unchanged). No centers: every sample is kept.
    """
    xyz = np.array(xyz, copy=True)
    if xyz.ndim == 2:
        xyz = xyz[None]
    ref = np.asarray(reference_signs, dtype=np.int8).reshape(-1)
    status = np.zeros(len(xyz), dtype=np.int8)
    if len(ref) == 0:
        return xyz, status
    signs = handedness(xyz, centers)  # (B, C)
    same = np.all(signs == ref, axis=1)
    inverted = np.all(signs == -ref, axis=1)
    status[inverted] = MIRRORED
    status[~same & ~inverted] = DROPPED
    xyz[inverted] = -xyz[inverted]
    return xyz, status


# -------------------------------------------------------------------------------- ensembles


@dataclass
class ReweightedEnsemble:
    """A weighted set of samples, the common output of SNIS and SMC.

    xyz (n, A, 3) float32 nm after the chirality fix; log_q (n,) the proposal log density used in
    the weight (nats); u (n,) kT (NaN where not evaluated: dropped samples); log_w (n,) after
    clipping; weights (n,) normalized; status (n,) int8 (0 kept, 1 mirrored, 2 dropped).
    """

    xyz: np.ndarray
    log_q: np.ndarray
    u: np.ndarray
    log_w: np.ndarray
    weights: np.ndarray
    status: np.ndarray
    counts: dict
    ess: float
    ess_fraction: float
    max_weight: float
    method: str = "snis"
    extras: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(len(self.log_w))

    @property
    def n_infinite_energy(self) -> int:
        return int(self.counts["infinite_energy"])

    def resample(self, n: int | None = None, seed: int | np.random.Generator | None = 0,
                 method: str = "systematic", return_xyz: bool = False) -> np.ndarray:
        """Indices (n,) drawn by weight (default n = ensemble size), or their xyz (n, A, 3)."""
        idx = resample(self.weights, self.n if n is None else n, method, seed, is_log=False)
        return self.xyz[idx] if return_xyz else idx

    def summary(self) -> dict:
        """JSON-serializable report: counts, ESS (count and fraction), max weight, method.

        Extras that are scalars, dicts or lists/tuples of at most 1000 entries are included
        (non-finite floats become None); per-sample numpy arrays are not.
        """
        out = {"method": self.method, "counts": {k: int(v) for k, v in self.counts.items()},
               "ess": float(self.ess), "ess_fraction": float(self.ess_fraction),
               "max_weight": float(self.max_weight)}
        out |= {k: jsonable(v) for k, v in self.extras.items() if _fits_summary(v)}
        return out


def _fits_summary(v) -> bool:
    """Scalars, dicts and lists/tuples of at most 1000 entries of such: what a summary keeps of
    the extras (per-sample arrays and other objects are left out)."""
    if isinstance(v, (list, tuple)):
        return len(v) <= 1000 and all(_fits_summary(x) for x in v)
    if isinstance(v, dict):
        return all(_fits_summary(x) for x in v.values())
    return v is None or isinstance(v, (bool, int, float, str, np.bool_, np.integer, np.floating))


def ensemble_from_log_weights(xyz: np.ndarray, log_q: np.ndarray, u: np.ndarray,
                              log_w: np.ndarray, status: np.ndarray | None = None,
                              clip_fraction: float = 0.002, method: str = "snis",
                              extras: dict | None = None) -> ReweightedEnsemble:
    """Clip, normalize and count: the shared last step of SNIS (`reweight`) and SMC.

    `log_w` (n,) must already be -inf for dropped samples and samples with non-finite energy.
    """
    status = np.zeros(len(log_w), np.int8) if status is None else np.asarray(status, np.int8)
    u = np.asarray(u, dtype=np.float64)
    log_w, n_clipped = clip_log_weights(log_w, clip_fraction)
    weights = normalized_weights(log_w)
    e = ess(log_w)
    n = len(log_w)
    counts = {"n": n, "kept": int(np.sum(status == KEPT)),
              "mirrored": int(np.sum(status == MIRRORED)),
              "dropped": int(np.sum(status == DROPPED)),
              "infinite_energy": int(np.sum((status != DROPPED) & ~np.isfinite(u))),
              "clipped": n_clipped}
    return ReweightedEnsemble(
        xyz=np.asarray(xyz, dtype=np.float32), log_q=np.asarray(log_q, dtype=np.float64), u=u,
        log_w=log_w, weights=weights, status=status, counts=counts, ess=e,
        ess_fraction=e / n if n else 0.0, max_weight=float(weights.max()) if n else 0.0,
        method=method, extras=dict(extras or {}))


MIRROR_SKIP_BOUND = 2.0 ** -53  # the weight mass left to a one-sided log q: float64 round-off
# How a sample with every chiral center inverted is treated (DESIGN §8):
#   "mirror": mirrored x -> -x, and every kept or mirrored sample is weighted with its two-sided
#       density q(y) + q(-y) (one more teacher-forced pass per sample);
#   "drop": weight 0 like a mixed one, the others keep their own q(x): SNIS on the L-isomer
#       with the proposal q restricted to it, exact too, and no mirror image is ever scored;
#   "auto": "drop" when fewer than AUTO_MIRROR_FROM of the samples are inverted (a trained
#       model: the shipped ala2 draws 17 in 100,000, so at most that fraction is lost), else
#       "mirror" (an early or transferable model mirrors a third of its samples: worth keeping).
INVERTED = ("auto", "mirror", "drop")
AUTO_MIRROR_FROM = 0.01


def _mirror_rounds(one_sided, two_sided, n_clip, log_q_mirror, log_q, u):
    """Index arrays of the samples whose mirror image must be scored, in two rounds.

    The two-sided weight never exceeds the one-sided one (q(y) + q(-y) >= q(x)), so
    `one_sided` (B,) bounds every final log w from above. Round 1 scores the n_clip + 64
    samples with the largest bounds; L, the (n_clip + 1)-th largest of their final log w, is a
    lower bound of the largest weight left after clipping. Round 2 scores every other sample
    except the lightest ones whose bounds sum to at most MIRROR_SKIP_BOUND * exp(L): those keep
    the one-sided log q (an upper bound), so every normalized weight moves by at most that
    fraction of the total, no skipped sample can enter the clipped set, and the count of
    finite weights (hence of clipped ones) is unchanged."""
    candidates = np.flatnonzero(two_sided)
    order = candidates[np.argsort(-one_sided[candidates], kind="stable")]
    first = order[:n_clip + 64]
    yield first
    if len(first) == len(order):
        return
    final = -u[first] - np.logaddexp(log_q[first], log_q_mirror[first])
    L = np.sort(final)[::-1][min(n_clip, len(final) - 1)]
    rest = order[len(first):][::-1]  # lightest first
    mass = np.logaddexp.accumulate(one_sided[rest])  # log of the running sum of their bounds
    n_skip = int(np.searchsorted(mass, L + np.log(MIRROR_SKIP_BOUND), side="right"))
    if n_skip < len(rest):
        yield np.sort(rest[n_skip:])


def reweight(xyz: np.ndarray, log_q: np.ndarray, energy_fn, *, log_q_fn=None,
             centers: np.ndarray | None = None, reference_signs: np.ndarray | None = None,
             clip_fraction: float = 0.002, method: str = "snis",
             inverted: str = "mirror") -> ReweightedEnsemble:
    """SNIS of proposal samples to exp(-u): chirality fix, energies, weights, clipping, ESS.

    xyz (B, A, 3) nm as drawn, log_q (B,) their proposal log density; `energy_fn(xyz) -> u (B,)`
    kT (+inf for bad frames) is called once on the non-dropped fixed samples; `centers` (C, 4)
    and `reference_signs` (C,) enable the chirality fix (both or neither).

    With `log_q_fn(xyz) -> log_q (B,)` and the chirality check on, a kept or mirrored sample y
    (the final coordinates) may have been drawn as y or as -y, so the weight uses
    log q(y) + q(-y) = logaddexp(log q(x), log q(-x)) with x the drawn sample: `log_q` supplies
    log q(x) and `log_q_fn` calls on -x supply the other (stored in extras["log_q_mirror"]; NaN
    where not scored). Energies come first, so mirror images are scored only where the weight
    can matter: `_mirror_rounds` skips samples whose weights together are at most
    MIRROR_SKIP_BOUND (2^-53) of the total, i.e. float64 round-off (extras["mirror_skipped"]).
    Without `log_q_fn` the drawn sample's own log q(x) is used; for an energy invariant under
    inversion that is also consistent (p(x)/q(x) carries over to the fixed sample), but the
    two-sided density is its Rao-Blackwellization and has lower weight variance.
    `inverted` ("mirror", "drop" or "auto", see INVERTED) says what all-inverted samples get;
    with "drop" they are DROPPED, the rest keep log q(x) and no mirror image is scored
    (extras["inverted"] records the choice and extras["inverted_dropped"] their count).
    """
    xyz = np.asarray(xyz)
    if xyz.ndim == 2:
        xyz = xyz[None]
    log_q = np.asarray(log_q, dtype=np.float64).reshape(-1)
    if len(log_q) != len(xyz):
        raise ValueError(f"log_q has {len(log_q)} entries for {len(xyz)} samples")
    if (centers is None) != (reference_signs is None):
        raise ValueError("give both centers and reference_signs, or neither")
    check = centers is not None and len(np.asarray(reference_signs).reshape(-1)) > 0
    extras = {}
    fixed, status = _fixed(xyz, centers if check else None, reference_signs, inverted, extras)
    live = status != DROPPED
    u = np.full(len(xyz), np.nan)
    if live.any():
        u[live] = np.asarray(energy_fn(fixed[live]), dtype=np.float64).reshape(-1)
    log_q_used = log_q.copy()
    # A draw with log q = -inf came from outside the parametrization (a body-frame model's
    # tokens with b_x <= 0 or c_y <= 0, DESIGN §17): weight 0, whatever its mirror image.
    two_sided = live & (log_q > -np.inf) & np.isfinite(u)
    if check and log_q_fn is not None and two_sided.any() and extras["inverted"] == "mirror":
        log_q_mirror = np.full(len(xyz), np.nan)
        one_sided = log_weights(u, log_q)  # (B,) an upper bound of every final log w
        n_clip = int(np.floor(clip_fraction * np.sum(np.isfinite(one_sided))))
        for idx in _mirror_rounds(one_sided, two_sided, n_clip, log_q_mirror, log_q, u):
            log_q_mirror[idx] = np.asarray(log_q_fn(-np.asarray(xyz)[idx]), np.float64)
        scored = two_sided & ~np.isnan(log_q_mirror)
        log_q_used[scored] = np.logaddexp(log_q[scored], log_q_mirror[scored])
        extras.update(log_q_mirror=log_q_mirror, mirror_skipped=int(np.sum(two_sided & ~scored)),
                      mirror_skip_bound=MIRROR_SKIP_BOUND)
    log_w = log_weights(np.where(live, u, np.inf), log_q_used)
    return ensemble_from_log_weights(fixed, log_q_used, u, log_w, status, clip_fraction, method,
                                     extras)


def _fixed(xyz: np.ndarray, centers, reference_signs, inverted: str, extras: dict):
    """The chirality fix under the rule `inverted` (INVERTED): -> (fixed xyz, status); the rule
    applied and, with "drop", the count of inverted samples dropped go into `extras`."""
    if inverted not in INVERTED:
        raise ValueError(f"inverted must be one of {', '.join(INVERTED)}, got {inverted!r}")
    if centers is None:
        return np.array(xyz, copy=True), np.zeros(len(xyz), np.int8)
    fixed, status = fix_chirality(xyz, centers, reference_signs)
    flipped = status == MIRRORED
    rule = inverted if inverted != "auto" else (
        "mirror" if flipped.mean() >= AUTO_MIRROR_FROM else "drop")
    extras["inverted"] = rule
    if rule == "drop":
        fixed[flipped], status[flipped] = xyz[flipped], DROPPED
        extras["inverted_dropped"] = int(flipped.sum())
    return fixed, status
