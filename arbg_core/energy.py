"""Force-field presets and reduced energies u = E / kT (all OpenMM units stay in this file).

`EnergyModel(mdtraj_topology, preset).reduced_energy(xyz)` maps `(B, A, 3)` nm -> `(B,)` kT; frames with
non-finite or exploded coordinates get `+inf` (weight 0 downstream), never an exception.
`partial_energy(xyz, r)` is the energy of the sub-system made of the atoms of residues 1..r only:
bonded terms whose atoms all lie in the prefix, nonbonded and implicit-solvent terms over the
prefix atoms only (twisted SMC needs it).
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

KB_KJ_PER_MOL_K = 0.0083144626181532  # Boltzmann constant times Avogadro, kJ/mol/K
EXPLODED_NM = 1.0e3  # coordinates beyond this are treated as exploded


@dataclass(frozen=True)
class Preset:
    name: str
    files: tuple[str, ...]
    nonbonded: str  # "NoCutoff" | "CutoffNonPeriodic"
    cutoff_nm: float | None
    temperature_k: float

    @property
    def kT(self) -> float:  # kJ/mol
        return KB_KJ_PER_MOL_K * self.temperature_k


PRESETS = {
    "amber99sbildn-obc": Preset("amber99sbildn-obc", ("amber99sbildn.xml", "amber99_obc.xml"),
                                "NoCutoff", None, 300.0),
    "amber14-obc1": Preset("amber14-obc1", ("amber14-all.xml", "implicit/obc1.xml"),
                           "CutoffNonPeriodic", 2.0, 310.0),
}
DEFAULT_PRESET = "amber99sbildn-obc"


def get_preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset]


@lru_cache(maxsize=None)
def forcefield(preset: Preset):
    import openmm.app as app

    return app.ForceField(*preset.files)


def residue_blocks(topology) -> tuple[tuple[int, int], ...]:
    """[start, stop) atom ranges per residue of an mdtraj topology; raises if a residue's atoms
    are not contiguous. (Defined here, not in peptide, because partial energies are energies of
    residue prefixes, and peptide builds on this module.)"""
    blocks = []
    for res in topology.residues:
        idx = [a.index for a in res.atoms]
        if idx != list(range(idx[0], idx[-1] + 1)):
            raise ValueError(f"atoms of residue {res} are not contiguous")
        blocks.append((idx[0], idx[-1] + 1))
    if blocks and (blocks[0][0] != 0 or any(a[1] != b[0] for a, b in zip(blocks, blocks[1:]))):
        raise ValueError("residues are not in atom order")
    return tuple(blocks)


def _as_openmm_topology(topology):
    return topology.to_openmm() if hasattr(topology, "to_openmm") else topology


def create_system(topology, preset: str | Preset = DEFAULT_PRESET):
    """OpenMM System for a topology (mdtraj or OpenMM): implicit solvent, no constraints."""
    import openmm.app as app
    import openmm.unit as unit

    p = get_preset(preset)
    kwargs = dict(nonbondedMethod=getattr(app, p.nonbonded), constraints=None, rigidWater=False,
                  removeCMMotion=False)
    if p.cutoff_nm is not None:
        kwargs["nonbondedCutoff"] = p.cutoff_nm * unit.nanometer
    return forcefield(p).createSystem(_as_openmm_topology(topology), **kwargs)


def _context(system, platform_name: str):
    import openmm

    integrator = openmm.VerletIntegrator(0.001)
    platform = openmm.Platform.getPlatformByName(platform_name)
    props = {"Threads": "1"} if platform_name == "CPU" else {}
    return openmm.Context(system, integrator, platform, props), integrator


def minimize_positions(topology, xyz: np.ndarray, preset: str | Preset = DEFAULT_PRESET,
                       max_iterations: int = 500) -> np.ndarray:
    """Short local energy minimization; returns (A, 3) nm."""
    import openmm

    ctx, _ = _context(create_system(topology, preset), "Reference")
    ctx.setPositions(np.asarray(xyz, dtype=np.float64))
    openmm.LocalEnergyMinimizer.minimize(ctx, 1.0, max_iterations)
    state = ctx.getState(getPositions=True)
    return np.asarray(state.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer))


def _time_platform(system, xyz: np.ndarray, platform_name: str, n: int = 20) -> float:
    try:
        ctx, _ = _context(system, platform_name)
    except Exception:  # platform not available on this machine
        return float("inf")
    ctx.setPositions(xyz)
    ctx.getState(getEnergy=True)  # first call compiles kernels
    t0 = time.perf_counter()
    for _ in range(n):
        ctx.setPositions(xyz)
        ctx.getState(getEnergy=True)
    return (time.perf_counter() - t0) / n


def fastest_platform(system, xyz: np.ndarray, candidates=("Reference", "CPU")) -> str:
    """Pick the platform by a quick measurement (small peptides: Reference wins by ~10-20x)."""
    times = {name: _time_platform(system, xyz, name) for name in candidates}
    return min(times, key=times.get)


def _keep_terms(count: int, get, add, n_indices: int, n_atoms: int) -> None:
    """Re-add every term `get(k)` (k < count) whose first `n_indices` particles are all in
    [0, n_atoms): `add(*get(k))`."""
    for k in range(count):
        term = get(k)
        if all(i < n_atoms for i in term[:n_indices]):
            add(*term)


def _copy_settings(src, dst, *names: str) -> None:
    """dst.setNAME(src.getNAME()) for each name, in order."""
    for name in names:
        getattr(dst, "set" + name)(getattr(src, "get" + name)())


def _bonded(term: str, n_indices: int):
    """Copier of a bonded force (HarmonicBondForce: "Bond", 2 particles; HarmonicAngleForce:
    "Angle", 3; PeriodicTorsionForce: "Torsion", 4) through its getNum{term}s / get{term}Parameters
    / add{term} methods."""
    def copy(force, n_atoms: int):
        f = type(force)()
        _keep_terms(getattr(force, f"getNum{term}s")(), getattr(force, f"get{term}Parameters"),
                    getattr(f, f"add{term}"), n_indices, n_atoms)
        return f

    return copy


def _nonbonded(force, n_atoms: int):
    import openmm

    f = openmm.NonbondedForce()
    _copy_settings(force, f, "NonbondedMethod", "CutoffDistance", "UseDispersionCorrection",
                   "ReactionFieldDielectric")
    for i in range(n_atoms):
        f.addParticle(*force.getParticleParameters(i))
    _keep_terms(force.getNumExceptions(), force.getExceptionParameters, f.addException, 2, n_atoms)
    return f


def _gbsa_obc(force, n_atoms: int):
    import openmm

    f = openmm.GBSAOBCForce()
    _copy_settings(force, f, "NonbondedMethod", "CutoffDistance", "SoluteDielectric",
                   "SolventDielectric", "SurfaceAreaEnergy")
    for i in range(n_atoms):
        f.addParticle(*force.getParticleParameters(i))
    return f


def _custom_gb(force, n_atoms: int):
    import openmm

    f = openmm.CustomGBForce()
    _copy_settings(force, f, "NonbondedMethod", "CutoffDistance")
    for k in range(force.getNumPerParticleParameters()):
        f.addPerParticleParameter(force.getPerParticleParameterName(k))
    for k in range(force.getNumGlobalParameters()):
        f.addGlobalParameter(force.getGlobalParameterName(k),
                             force.getGlobalParameterDefaultValue(k))
    for k in range(force.getNumComputedValues()):
        f.addComputedValue(*force.getComputedValueParameters(k))
    for k in range(force.getNumEnergyTerms()):
        f.addEnergyTerm(*force.getEnergyTermParameters(k))
    for k in range(force.getNumTabulatedFunctions()):
        f.addTabulatedFunction(force.getTabulatedFunctionName(k),
                               openmm.XmlSerializer.clone(force.getTabulatedFunction(k)))
    for i in range(n_atoms):
        f.addParticle(force.getParticleParameters(i))  # one tuple: CustomGB's own signature
    _keep_terms(force.getNumExclusions(), force.getExclusionParticles, f.addExclusion, 2, n_atoms)
    return f


def _no_energy(force, n_atoms: int):
    return None  # CMMotionRemover: it changes velocities, never the energy


# OpenMM force class name -> copier(force, n_atoms) -> the force restricted to atoms
# [0, n_atoms), or None where it has no energy term to keep.
_SUBSYSTEM_COPIERS = {
    "HarmonicBondForce": _bonded("Bond", 2), "HarmonicAngleForce": _bonded("Angle", 3),
    "PeriodicTorsionForce": _bonded("Torsion", 4), "NonbondedForce": _nonbonded,
    "GBSAOBCForce": _gbsa_obc, "CustomGBForce": _custom_gb, "CMMotionRemover": _no_energy,
}


def subsystem(system, n_atoms: int):
    """A System holding only atoms [0, n_atoms) and every term fully inside them."""
    import openmm

    sub = openmm.System()
    for i in range(n_atoms):
        sub.addParticle(system.getParticleMass(i))
    for force in system.getForces():
        name = type(force).__name__
        if name not in _SUBSYSTEM_COPIERS:
            raise NotImplementedError(f"partial energies do not support {name}; supported: "
                                      f"{', '.join(_SUBSYSTEM_COPIERS)}")
        f = _SUBSYSTEM_COPIERS[name](force, n_atoms)
        if f is not None:
            sub.addForce(f)
    return sub


class _Evaluator:
    """One OpenMM context; frames in, reduced energies out (inf for bad frames)."""

    def __init__(self, system, platform_name: str, kT: float):
        import openmm

        self._openmm = openmm
        self.ctx, self._integrator = _context(system, platform_name)
        self.kT = kT

    def __call__(self, xyz: np.ndarray) -> np.ndarray:
        xyz = np.asarray(xyz, dtype=np.float64)
        out = np.full(len(xyz), np.inf)
        for b, frame in enumerate(xyz):
            if not np.all(np.isfinite(frame)) or np.abs(frame).max() > EXPLODED_NM:
                continue
            try:
                self.ctx.setPositions(frame)
                e = self.ctx.getState(getEnergy=True).getPotentialEnergy()
                e = e.value_in_unit(self._openmm.unit.kilojoule_per_mole) / self.kT
            except self._openmm.OpenMMException:
                continue
            out[b] = e if np.isfinite(e) else np.inf
        return out


_WORKER: _Evaluator | None = None


def _init_worker(system_xml: str, platform_name: str, kT: float):
    import openmm

    global _WORKER
    _WORKER = _Evaluator(openmm.XmlSerializer.deserialize(system_xml), platform_name, kT)


def _worker_eval(xyz: np.ndarray) -> np.ndarray:
    return _WORKER(xyz)


class EnergyModel:
    """Reduced energies of a peptide under a preset, batched over frames.

    `n_workers > 1` spreads large batches over processes (each with its own context).
    Contexts are created lazily and belong to this object: never share one between threads.
    """

    def __init__(self, topology, preset: str | Preset = DEFAULT_PRESET, platform: str = "auto",
                 n_workers: int = 1, temperature_k: float | None = None):
        """topology: an mdtraj Topology (a Peptide's `.topology`), atoms in residue order."""
        import mdtraj as md

        if not isinstance(topology, md.Topology):
            raise TypeError(f"EnergyModel takes an mdtraj Topology (e.g. a Peptide's .topology), "
                            f"got {type(topology).__name__}")
        from .checks import TEMPERATURE_K

        self.preset = get_preset(preset)
        if temperature_k is not None and TEMPERATURE_K.problem(temperature_k):
            raise ValueError(f"temperature_k {TEMPERATURE_K.problem(temperature_k)}")
        self.temperature_k = temperature_k if temperature_k is not None else self.preset.temperature_k
        self.kT = KB_KJ_PER_MOL_K * self.temperature_k
        self.system = create_system(topology, self.preset)
        self.n_atoms = self.system.getNumParticles()
        self.residue_blocks = residue_blocks(topology)
        self._platform = platform
        self.n_workers = n_workers
        self._full: _Evaluator | None = None
        self._partial: dict[int, _Evaluator] = {}
        self._pool: ProcessPoolExecutor | None = None

    @property
    def platform(self) -> str:
        if self._platform == "auto":
            probe = np.random.default_rng(0).normal(0, 0.5, (self.n_atoms, 3))
            self._platform = fastest_platform(self.system, probe)
        return self._platform

    def reduced_energy(self, xyz: np.ndarray) -> np.ndarray:
        """(B, A, 3) nm -> (B,) float64 kT; +inf for non-finite, exploded or failing frames."""
        xyz = np.asarray(xyz)
        if xyz.ndim == 2:
            xyz = xyz[None]
        if xyz.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"expected frames of shape ({self.n_atoms}, 3), got {xyz.shape[1:]}")
        if self.n_workers > 1 and len(xyz) >= 4 * self.n_workers:
            return self._parallel(xyz)
        if self._full is None:
            self._full = _Evaluator(self.system, self.platform, self.kT)
        return self._full(xyz)

    def partial_energy(self, xyz_prefix: np.ndarray, n_residues: int) -> np.ndarray:
        """(B, A_r, 3) nm of the atoms of residues 1..r -> (B,) kT of that sub-system."""
        if not 1 <= n_residues <= len(self.residue_blocks):
            raise ValueError(f"n_residues must be in 1..{len(self.residue_blocks)}")
        n_atoms = self.residue_blocks[n_residues - 1][1]
        xyz_prefix = np.asarray(xyz_prefix)
        if xyz_prefix.ndim == 2:
            xyz_prefix = xyz_prefix[None]
        if xyz_prefix.shape[1] != n_atoms:
            xyz_prefix = xyz_prefix[:, :n_atoms]
        if n_residues not in self._partial:
            self._partial[n_residues] = _Evaluator(subsystem(self.system, n_atoms),
                                                   self.platform, self.kT)
        return self._partial[n_residues](xyz_prefix)

    def _parallel(self, xyz: np.ndarray) -> np.ndarray:
        import multiprocessing as mp

        import openmm

        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.n_workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                initargs=(openmm.XmlSerializer.serialize(self.system), self.platform, self.kT))
        parts = np.array_split(xyz, self.n_workers * 4)
        return np.concatenate(list(self._pool.map(_worker_eval, parts)))

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __getstate__(self):  # contexts and pools never travel between processes
        state = self.__dict__.copy()
        state.update(_full=None, _partial={}, _pool=None)
        return state
