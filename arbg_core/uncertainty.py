"""Numbers with their errors: basin populations and free energies of weighted samples and of MD
time series, "not resolved" when a value is smaller than its error, and metrics against their
noise floor.

Weighted samples (SNIS / SMC): the standard error of a population p uses the Kish effective
sample size n_eff = 1 / sum w^2 (normalized w): sqrt(max(p(1-p), 1/n_eff) / n_eff); the floor
keeps an empty basin from claiming an error of 0 from a handful of samples. MD frames are
correlated in time: the error is the larger of that and the spread of block averages
(contiguous blocks), so correlated frames are not counted as independent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BLOCKS = 10  # blocks of a time series (MD)
# Backbone basins by (phi, psi) in degrees, the usual coarse partition of a Ramachandran map.
BASINS = ("αR", "β / PPII", "αL / C7ax")


@dataclass(frozen=True)
class Estimate:
    """A value with one standard error and the number of independent samples behind it."""

    value: float
    error: float
    n_effective: float
    from_zero: bool = True  # a population: resolved only if larger than its error

    @property
    def resolved(self) -> bool:
        """A population stands out of its error (one smaller than its error cannot be told from
        0); a free energy of a resolved population has a finite error (F = 0 is a value)."""
        if not (np.isfinite(self.value) and np.isfinite(self.error)):
            return False
        return self.value > self.error if self.from_zero else True

    def text(self, unit: str = "") -> str:
        """'0.620 ± 0.051' (the value to the error's second significant digit), or
        'not resolved (± 0.11)' when the value is within its error."""
        if not np.isfinite(self.error):
            return "not resolved"
        if not self.resolved:
            return f"not resolved (± {self.error:.2g}{unit})"
        decimals = max(0, 1 - int(np.floor(np.log10(self.error)))) if self.error > 0 else 3
        return f"{self.value + 0.0:.{decimals}f} ± {self.error:.{decimals}f}{unit}"  # no -0.00


def kish_ess(weights: np.ndarray | None, n: int) -> float:
    """Effective sample size (sum w)^2 / sum w^2; n for uniform weights (None)."""
    if weights is None:
        return float(n)
    w = np.asarray(weights, np.float64)
    s = w.sum()
    return float(s * s / np.sum(w * w)) if s > 0 else 0.0


def population(inside: np.ndarray, weights: np.ndarray | None = None) -> Estimate:
    """Weight of the samples with `inside` True (n,), error from the Kish ESS."""
    inside = np.asarray(inside, bool)
    w = np.ones(len(inside)) if weights is None else np.asarray(weights, np.float64)
    total = w.sum()
    if not total > 0:
        return Estimate(float("nan"), float("inf"), 0.0)
    p = float(w[inside].sum() / total)
    n_eff = kish_ess(w, len(w))
    return Estimate(p, float(np.sqrt(max(p * (1 - p), 1.0 / n_eff) / n_eff)), n_eff)


def time_series_population(inside: np.ndarray, n_blocks: int = N_BLOCKS) -> Estimate:
    """Fraction of frames of a time series (n,) with `inside` True; the error is at least the
    standard error of `n_blocks` contiguous block averages. n_effective = p(1-p)/error^2."""
    inside = np.asarray(inside, bool)
    iid = population(inside)
    if len(inside) < 2 * n_blocks:
        return iid
    means = [b.mean() for b in np.array_split(inside.astype(np.float64), n_blocks)]
    err = max(iid.error, float(np.std(means, ddof=1) / np.sqrt(n_blocks)))
    p = iid.value
    return Estimate(p, err, float(p * (1 - p) / err ** 2) if 0 < p < 1 else iid.n_effective)


def free_energy(p: Estimate) -> Estimate:
    """-ln p in kT with the propagated error (error of p / p); NaN value when p is not resolved."""
    if not p.resolved:
        return Estimate(float("nan"), float("inf"), p.n_effective)
    return Estimate(float(-np.log(p.value)), p.error / p.value, p.n_effective, from_zero=False)


def basin_masks(phi: np.ndarray, psi: np.ndarray) -> dict[str, np.ndarray]:
    """phi, psi (n,) radians -> basin name -> bool (n,). αL / C7ax: 0 < φ < 120°; αR: φ < 0 and
    -120° < ψ < 50°; β / PPII: φ < 0 otherwise. The rest (φ > 120°, rare) is in none."""
    f, s = np.degrees(phi), np.degrees(psi)
    alpha_r = (f < 0) & (s > -120) & (s < 50)
    return {"αR": alpha_r, "β / PPII": (f < 0) & ~alpha_r, "αL / C7ax": (f > 0) & (f < 120)}


def basin_table(ensembles: dict, residue_labels: list[str], time_series: set) -> list[dict]:
    """Rows (residue, basin) x columns (one per ensemble): population and free energy with errors.

    ensembles: label -> ((phi, psi) each (n, R) radians, normalized weights or None); labels in
    `time_series` are MD (block errors). Each row: {"residue", "basin", label: Estimate,
    f"{label} F": Estimate}."""
    rows = []
    for r, res in enumerate(residue_labels):
        masks = {label: basin_masks(angles[0][:, r], angles[1][:, r])
                 for label, (angles, _) in ensembles.items()}
        for basin in BASINS:
            row = {"residue": res, "basin": basin}
            for label, (_, w) in ensembles.items():
                inside = masks[label][basin]
                p = time_series_population(inside) if label in time_series else population(inside, w)
                row[label], row[f"{label} F"] = p, free_energy(p)
            rows.append(row)
    return rows


def noise_verdict(value: float, floor: float) -> tuple[float, str]:
    """A metric as a multiple of its MD-vs-MD noise floor, and what that means in plain words."""
    if not (np.isfinite(value) and np.isfinite(floor)) or floor <= 0:
        return float("nan"), "no noise floor to compare with"
    ratio = float(value / floor)
    if ratio <= 1.5:
        return ratio, "at the noise floor: as close as MD is to itself"
    if ratio <= 3.0:
        return ratio, "near the noise floor: a small but real difference"
    return ratio, "clearly different from MD (well above its noise)"
