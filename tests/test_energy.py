import mdtraj as md
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from arbg_core import peptide
from arbg_core.energy import PRESETS, EnergyModel, subsystem

KB = unit.BOLTZMANN_CONSTANT_kB * unit.AVOGADRO_CONSTANT_NA


def openmm_reduced_energy(omm_top, xyz, preset):
    """OpenMM's own energy of a system built straight from the force-field files."""
    p = PRESETS[preset]
    kwargs = dict(nonbondedMethod=getattr(app, p.nonbonded), constraints=None)
    if p.cutoff_nm:
        kwargs["nonbondedCutoff"] = p.cutoff_nm * unit.nanometer
    system = app.ForceField(*p.files).createSystem(omm_top, **kwargs)
    sim = app.Simulation(omm_top, system, openmm.VerletIntegrator(0.001 * unit.picosecond),
                         openmm.Platform.getPlatformByName("Reference"))
    out = []
    for frame in xyz:
        sim.context.setPositions(frame * unit.nanometer)
        e = sim.context.getState(getEnergy=True).getPotentialEnergy()
        out.append(e / (KB * p.temperature_k * unit.kelvin))
    return np.array(out)


def jittered(pep, n, scale=0.01, seed=0):
    rng = np.random.default_rng(seed)
    return pep.xyz[None] + rng.normal(0, scale, (n,) + pep.xyz.shape)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_reduced_energy_matches_openmm(preset):
    pep = peptide.build("AKA", "zwitterionic")
    xyz = jittered(pep, 5)
    ours = EnergyModel(pep.topology, preset).reduced_energy(xyz)
    ref = openmm_reduced_energy(pep.openmm_topology, xyz, preset)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def _platforms():
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    return [n for n in names if n != "Reference"] or [
        pytest.param("none", marks=pytest.mark.skip(reason="only the Reference platform exists"))]


@pytest.mark.parametrize("platform", _platforms())
def test_platforms_agree_with_reference(ala2, platform):
    xyz = jittered(ala2, 3)
    ref = EnergyModel(ala2.topology, platform="Reference").reduced_energy(xyz)
    np.testing.assert_allclose(EnergyModel(ala2.topology, platform=platform).reduced_energy(xyz),
                               ref, rtol=1e-5)


def test_bad_frames_give_inf_only_for_themselves(ala2):
    xyz = jittered(ala2, 4)
    xyz[1, 3, 0] = np.nan
    xyz[2, 5] = 1e6  # exploded
    em = EnergyModel(ala2.topology)
    u = em.reduced_energy(xyz)
    assert np.isinf(u[1]) and u[1] > 0 and np.isinf(u[2])
    assert np.isfinite(u[[0, 3]]).all()
    np.testing.assert_allclose(u[[0, 3]], em.reduced_energy(xyz[[0, 3]]))


def test_wrong_shape_is_a_clear_error(ala2):
    with pytest.raises(ValueError, match="22"):
        EnergyModel(ala2.topology).reduced_energy(np.zeros((2, 21, 3)))


def test_parallel_workers_agree(ala2):
    xyz = jittered(ala2, 16)
    # One platform for both: "auto" measures each model separately, and under load the two
    # measurements can pick different platforms, whose energies differ at ~1e-7 relative.
    em = EnergyModel(ala2.topology, platform="Reference", n_workers=2)
    try:
        serial = EnergyModel(ala2.topology, platform="Reference").reduced_energy(xyz)
        np.testing.assert_allclose(em.reduced_energy(xyz), serial, rtol=1e-9)
    finally:
        em.close()


@pytest.mark.parametrize("preset", list(PRESETS))
def test_partial_energy_equals_directly_built_truncated_system(preset):
    """Two molecules in one topology: the prefix made of the first one's residues is exactly
    that molecule, so its partial energy must equal OpenMM's energy of the molecule alone."""
    first, second = peptide.build("AS", "capped"), peptide.build("G", "capped")
    modeller = app.Modeller(first.openmm_topology, first.xyz * unit.nanometer)
    modeller.add(second.openmm_topology, (second.xyz + 50.0) * unit.nanometer)
    xyz = np.concatenate([first.xyz, second.xyz + 50.0])[None]
    both = EnergyModel(md.Topology.from_openmm(modeller.topology), preset)
    n_res_first = first.topology.n_residues
    ours = both.partial_energy(xyz[:, :first.n_atoms], n_res_first)
    ref = openmm_reduced_energy(first.openmm_topology, xyz[:, :first.n_atoms], preset)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    # The whole prefix is the whole system.
    full = both.partial_energy(xyz, len(both.residue_blocks))
    np.testing.assert_allclose(full, both.reduced_energy(xyz), rtol=1e-9)


# The term counts of each force kind: a prefix's sub-system holds those of every shorter prefix.
TERM_COUNTS = {"HarmonicBondForce": "getNumBonds", "HarmonicAngleForce": "getNumAngles",
               "PeriodicTorsionForce": "getNumTorsions", "NonbondedForce": "getNumExceptions",
               "GBSAOBCForce": "getNumParticles", "CustomGBForce": "getNumExclusions"}


def test_prefix_subsystems_grow_term_by_term_to_the_full_energy(ala2):
    """(The partial energies themselves are not monotone in r: ala2's are about -38.8, -59.9 and
    -53.6 kT at its minimized structure.)"""
    em = EnergyModel(ala2.topology)
    xyz = ala2.xyz[None]
    parts = [em.partial_energy(xyz[:, :stop], r + 1) for r, (_, stop) in enumerate(ala2.residue_blocks)]
    assert all(np.isfinite(p).all() for p in parts)
    np.testing.assert_allclose(parts[-1], em.reduced_energy(xyz), rtol=1e-9)
    counts = [{type(f).__name__: getattr(f, TERM_COUNTS[type(f).__name__])()
               for f in subsystem(em.system, stop).getForces()} for _, stop in ala2.residue_blocks]
    for shorter, longer in zip(counts, counts[1:]):
        assert shorter.keys() == longer.keys()
        assert all(shorter[k] <= longer[k] for k in shorter), (shorter, longer)
    assert counts[0] != counts[-1]


def test_unknown_forces_are_a_clear_error(ala2):
    system = EnergyModel(ala2.topology).system
    system.addForce(openmm.CustomExternalForce("x"))
    with pytest.raises(NotImplementedError, match="CustomExternalForce"):
        subsystem(system, 6)


def test_energy_model_takes_an_mdtraj_topology(ala2):
    with pytest.raises(TypeError, match="mdtraj Topology"):
        EnergyModel(ala2.openmm_topology)
