"""Reference MD with OpenMM: chunked, resumable, no frame lost or duplicated.

Protocol (DESIGN §4): LangevinMiddleIntegrator, 1 fs, friction 1/ps, no constraints, the preset's
temperature (or an override); minimize, warm up, then one frame every `save_ps`.

Layout of an output folder:
    topology.pdb         the system, minimized
    chunk_00000.dcd ...  consecutive frames (Å inside DCD, nm through mdtraj)
    checkpoint_K.chk     OpenMM checkpoint after K chunks (RNG state included)
    state.json           the commit point: {"chunks_done": K, "checkpoint": ..., ...}
    md.json              protocol, seed, versions
A chunk file becomes part of the run only when state.json says so; anything newer is removed
on resume, so a kill at any moment loses at most the chunk in flight.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .checks import (NON_NEGATIVE, POSITIVE, POSITIVE_INT, TEMPERATURE_K, Range, SettingError,
                     check, optional)
from .energy import DEFAULT_PRESET, create_system, fastest_platform, get_preset
from .files import ascii_view, atomic_path, atomic_write, quiet_stdout, read_json, write_json
from .flags import option
from .trajectories import save_dcd


@dataclass(frozen=True)
class MDConfig:
    ns: float = option(1.0, "production length, ns (after the warm-up)")
    preset: str = option(DEFAULT_PRESET, "force-field preset (energy.PRESETS)")
    temperature_k: float | None = option(None, "thermostat temperature, K; None: the preset's")
    dt_fs: float = option(1.0, "integration time step, fs")
    friction_per_ps: float = option(1.0, "Langevin friction, 1/ps")
    save_ps: float = option(1.0, "time between saved frames, ps")
    warmup_ps: float = option(100.0, "warm-up after the minimization, ps (no frames saved)")
    chunk_frames: int = option(1000, "frames per chunk file (the unit a killed run may lose)")
    seed: int = option(0, "seed of the initial velocities and of the thermostat")
    platform: str = option("auto", "OpenMM platform name; auto: the faster of Reference and CPU")

    def __post_init__(self):
        # seeds up to 2^30: replicas and corpus sequences add their index, OpenMM adds 1 (int32)
        check(self, ns=POSITIVE, temperature_k=optional(TEMPERATURE_K),
              dt_fs=Range(float, 0, 10, lo_open=True), friction_per_ps=NON_NEGATIVE,
              save_ps=POSITIVE, warmup_ps=NON_NEGATIVE, chunk_frames=POSITIVE_INT,
              seed=Range(int, 0, 2**30))
        if self.steps_per_frame < 1:
            raise SettingError("save_ps", f"{self.save_ps} is shorter than one time step "
                               f"({self.dt_fs} fs)", joint=True)
        if self.n_frames < 1:
            raise SettingError("ns", f"{self.ns} is shorter than one frame ({self.save_ps} ps)",
                               joint=True)

    @property
    def n_frames(self) -> int:
        return int(round(self.ns * 1000.0 / self.save_ps))

    @property
    def steps_per_frame(self) -> int:
        return int(round(self.save_ps * 1000.0 / self.dt_fs))


def _read_state(out: Path) -> dict | None:
    p = out / "state.json"
    return read_json(p) if p.exists() else None


def _write_chunk(path: Path, xyz_nm: np.ndarray, topology):
    with atomic_path(path, suffix=".dcd") as tmp:  # mdtraj picks the format from the suffix
        save_dcd(xyz_nm, topology, tmp)


def run_md(topology, xyz: np.ndarray, out_dir: str | os.PathLike, config: MDConfig,
           progress: Callable[[int, int, float], None] | None = None) -> Path:
    """Run (or resume) MD of an mdtraj topology from xyz (A, 3) nm;
    `progress(frames_done, n_frames, ns_per_day)` after each chunk."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    temperature = (config.temperature_k if config.temperature_k is not None
                   else get_preset(config.preset).temperature_k)
    system = create_system(topology, config.preset)
    state = _check_same_settings(out, _read_state(out), config)
    platform_name = (state or {}).get("platform") or (
        fastest_platform(system, np.asarray(xyz, float)) if config.platform == "auto"
        else config.platform)
    ctx, integrator = _simulation(system, config, temperature, platform_name)
    if state is None:
        state = _start(out, ctx, integrator, topology, xyz, config, temperature, platform_name)
    else:
        ctx.loadCheckpoint((out / state["checkpoint"]).read_bytes())
    _discard_uncommitted(out, state)
    if progress:
        progress(state["frames_done"], config.n_frames, 0.0)
    n_chunks = -(-config.n_frames // config.chunk_frames)
    for k in range(state["chunks_done"], n_chunks):
        n = min(config.chunk_frames, config.n_frames - k * config.chunk_frames)
        t0 = time.perf_counter()
        frames = _advance(ctx, integrator, n, topology.n_atoms, config.steps_per_frame)
        seconds = time.perf_counter() - t0
        if not np.isfinite(frames).all():  # blew up: keep the last good checkpoint, write nothing
            first = k * config.chunk_frames
            raise RuntimeError(f"{out}: non-finite coordinates in chunk {k} (frames "
                               f"{first}..{first + n - 1}); the run stays at "
                               f"{state['frames_done']} frames")
        state = _commit_chunk(out, state, k, frames, topology, ctx)
        if progress:
            ns_per_day = n * config.save_ps * 1e-3 / seconds * 86400.0
            progress(state["frames_done"], config.n_frames, ns_per_day)
    return out


def _check_same_settings(out: Path, state: dict | None, config: MDConfig) -> dict | None:
    """A folder resumes only the run it holds, or extends it to a larger --ns (the frames so far
    in whole chunks: the longer run is then the one a larger --ns from the start gives, frame
    for frame); returns the state to go on from."""
    if state is None or state["config"] == asdict(config):
        return state
    changed = {k for k, v in asdict(config).items() if state["config"].get(k) != v}
    if changed == {"ns"} and state["frames_done"] % config.chunk_frames == 0 and (
            config.n_frames >= state["frames_done"]):
        meta = read_json(out / "md.json")
        write_json(out / "md.json", {**meta, "config": {**meta["config"], "ns": config.ns}})
        state = {**state, "config": asdict(config)}
        write_json(out / "state.json", state)
        return state
    raise ValueError(f"{out} holds a run with different settings ({', '.join(sorted(changed))}); "
                     "use another --out or the same settings to resume (--ns may grow)")


def _simulation(system, config: MDConfig, temperature_k: float, platform_name: str):
    """(OpenMM Context, LangevinMiddleIntegrator) of the protocol."""
    import openmm
    import openmm.unit as unit

    integrator = openmm.LangevinMiddleIntegrator(temperature_k * unit.kelvin,
                                                 config.friction_per_ps / unit.picosecond,
                                                 config.dt_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(config.seed + 1)  # 0 would mean "pick one at random"
    platform = openmm.Platform.getPlatformByName(platform_name)
    props = {"Threads": "1"} if platform_name == "CPU" else {}
    return openmm.Context(system, integrator, platform, props), integrator


def _start(out: Path, ctx, integrator, topology, xyz: np.ndarray, config: MDConfig,
           temperature_k: float, platform_name: str) -> dict:
    """A new run: topology.pdb and md.json, minimize, warm up, commit chunk 0; its state."""
    import mdtraj as md
    import openmm
    import openmm.unit as unit

    md.Trajectory(np.asarray(xyz, np.float32)[None], topology).save_pdb(str(out / "topology.pdb"))
    meta = {"config": asdict(config), "temperature_k": temperature_k, "platform": platform_name,
            "n_atoms": topology.n_atoms, "openmm": openmm.__version__,
            "integrator": "LangevinMiddleIntegrator", "constraints": None}
    write_json(out / "md.json", meta)
    ctx.setPositions(np.asarray(xyz, dtype=np.float64))
    openmm.LocalEnergyMinimizer.minimize(ctx, 1.0, 1000)
    ctx.setVelocitiesToTemperature(temperature_k * unit.kelvin, config.seed + 1)
    integrator.step(int(round(config.warmup_ps * 1000.0 / config.dt_fs)))
    state = {"config": asdict(config), "platform": platform_name, "chunks_done": 0,
             "frames_done": 0, "checkpoint": "checkpoint_0.chk"}
    atomic_write(out / state["checkpoint"], ctx.createCheckpoint())
    write_json(out / "state.json", state)
    return state


def _discard_uncommitted(out: Path, state: dict) -> None:
    """Anything beyond the commit point is a leftover of a killed run."""
    for p in out.glob("chunk_*.dcd*"):
        if p.suffix != ".dcd" or int(p.stem.split("_")[1].split(".")[0]) >= state["chunks_done"]:
            p.unlink()
    for p in out.glob("checkpoint_*"):
        if p.name != state["checkpoint"]:
            p.unlink()


def _advance(ctx, integrator, n_frames: int, n_atoms: int, steps_per_frame: int) -> np.ndarray:
    """Integrate n_frames frames; (n_frames, A, 3) float32 nm."""
    import openmm.unit as unit

    frames = np.empty((n_frames, n_atoms, 3), np.float32)
    for i in range(n_frames):
        integrator.step(steps_per_frame)
        pos = ctx.getState(getPositions=True).getPositions(asNumpy=True)
        frames[i] = pos.value_in_unit(unit.nanometer)
    return frames


def _commit_chunk(out: Path, state: dict, k: int, frames: np.ndarray, topology, ctx) -> dict:
    """Chunk k's file and checkpoint first, then state.json (the commit), then the old
    checkpoint goes; returns the new state."""
    _write_chunk(out / f"chunk_{k:05d}.dcd", frames, topology)
    ckpt = f"checkpoint_{k + 1}.chk"
    atomic_write(out / ckpt, ctx.createCheckpoint())
    new_state = dict(state, chunks_done=k + 1, frames_done=state["frames_done"] + len(frames),
                     checkpoint=ckpt)
    write_json(out / "state.json", new_state)
    (out / state["checkpoint"]).unlink(missing_ok=True)
    return new_state


def run_meta(out_dir: str | os.PathLike) -> dict:
    """md.json (settings, temperature, platform) of an `arbg md` folder or of its first replica."""
    out = Path(out_dir)
    for folder in (out, *sorted(p for p in out.glob("replica_*") if p.is_dir())):
        if (folder / "md.json").is_file():
            return read_json(folder / "md.json")
    raise FileNotFoundError(f"no md.json under {out}: not an `arbg md` folder")


def load_run(out_dir: str | os.PathLike, stride: int = 1):
    """Load an `arbg md` folder (or a folder of replica_* folders) as one mdtraj Trajectory."""
    import mdtraj as md

    out = Path(out_dir)
    runs = sorted(p for p in out.glob("replica_*") if p.is_dir()) or [out]
    trajs = []
    for run in runs:
        state = _read_state(run)
        if state is None:
            raise FileNotFoundError(f"{run} is not an arbg md folder (no state.json)")
        if state["chunks_done"]:
            with ascii_view(run) as r, quiet_stdout():  # mdtraj's DCD reader: ASCII paths only
                chunks = [str(r / f"chunk_{k:05d}.dcd") for k in range(state["chunks_done"])]
                trajs.append(md.load(chunks, top=str(r / "topology.pdb"), stride=stride))
    if not trajs:
        raise ValueError(f"{out} has no finished frames yet")
    return md.join(trajs, check_topology=True, discard_overlapping_frames=False)


def measure_ns_per_day(topology, xyz: np.ndarray, config: MDConfig, seconds: float = 1.0
                       ) -> tuple[float, str]:
    """(ns/day of one MD process of this system under `config`'s protocol, platform): a short
    timed run after a minimization and a 1,000-step warm-up (the rate probe of `arbg fit`)."""
    import openmm
    import openmm.unit as unit

    temperature = (config.temperature_k if config.temperature_k is not None
                   else get_preset(config.preset).temperature_k)
    system = create_system(topology, config.preset)
    platform_name = (fastest_platform(system, np.asarray(xyz, float)) if config.platform == "auto"
                     else config.platform)
    ctx, integrator = _simulation(system, config, temperature, platform_name)
    ctx.setPositions(np.asarray(xyz, dtype=np.float64))
    openmm.LocalEnergyMinimizer.minimize(ctx, 1.0, 200)
    ctx.setVelocitiesToTemperature(temperature * unit.kelvin, config.seed + 1)
    integrator.step(1000)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:  # frames as the real run saves them
        _advance(ctx, integrator, 1, topology.n_atoms, config.steps_per_frame)
        steps += config.steps_per_frame
    elapsed = time.perf_counter() - t0
    return steps * config.dt_fs * 1e-6 / elapsed * 86400.0, platform_name
