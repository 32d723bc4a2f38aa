"""`arbg fit` (fit.py): the whole pipeline on capped alanine dipeptide with a tiny budget (ps of
MD, a `tiny` model, 40 steps), killed with SIGKILL in every stage in turn and resumed by rerunning
the same command; the model it ends with samples from the CLI. Also: the plan's estimates from
given rates, and a fit folder refusing a changed command."""

import json
import signal
import time

import pytest

from arbg_core.fit import open_folder, request_of
from arbg_core.cli import build_parser
from arbg_core.fit_plan import STAGES, FitConfig, Rates, command_line, describe, make_plan
from arbg_core.flags import config_from
from arbg_core.md import load_run
from cli_run import arbg_process, refuses, run_cli

FLAGS = ["A", "--termini", "capped", "--device", "cpu", "--md-ns", "0.02", "--hot-ns", "0.01",
         "--save-ps", "0.1", "--warmup-ps", "1", "--chunk-frames", "20", "--size", "tiny",
         "--steps", "40", "--batch-size", "32", "--taus", "0.9,1.0", "--n-tune", "64",
         "--n-proposals", "128", "--n-eval", "32"]


def _json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _done(out):
    return set((_json(out / "state.json") or {"done": {}})["done"])


def _in_stage(out, stage):
    return (_json(out / "status.json") or {}).get("stage") == stage


# When to kill: the stage has begun and, where it can, left something to resume from.
READY = {
    "md": lambda out: (_json(out / "md" / "reference" / "replica_00" / "state.json")
                       or {}).get("chunks_done", 0) >= 1,
    "data": lambda out: _in_stage(out, "data"),
    "train": lambda out: (out / "train" / "state" / "state.json").is_file(),
    "tune": lambda out: any((out / "tune").glob("tau_*.json")),
    "evaluate": lambda out: _in_stage(out, "evaluate"),
    "model": lambda out: _in_stage(out, "model"),
}


def _run_until(out, stage, before_kill=None, timeout_s=400):
    """Start `arbg fit FLAGS --out out`; SIGKILL it once `stage` is READY (after calling
    `before_kill`). True if killed there, False if the run ended first (it must then have
    succeeded)."""
    proc = arbg_process("fit", *FLAGS, "--out", out)
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout_s:
        if READY[stage](out):
            if before_kill:
                before_kill()
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            return True
        time.sleep(0.005)
    _, err = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0, err[-3000:]
    return False


def test_fit_killed_in_every_stage_resumes_and_serves(tmp_path, capsys):
    out = tmp_path / "fit"
    killed = []
    for stage in STAGES:
        if stage in _done(out):  # an earlier run finished it before its kill came
            continue
        busy = (lambda: refuses(capsys, "fit", *FLAGS, "--out", out, match="another arbg fit")
                ) if stage == "md" else None  # a second process on the folder is turned away
        if _run_until(out, stage, busy):
            assert stage not in _done(out), f"killed after {stage} was committed"
            killed.append(stage)
    assert {"md", "train", "tune", "evaluate"} <= set(killed), killed
    plan = _json(out / "plan.json")
    assert [s["name"] for s in plan["stages"]] == list(STAGES)
    assert all(s["estimate_s"] > 0 for s in plan["stages"])

    rc, text, err = run_cli(capsys, "fit", *FLAGS, "--out", out)  # the last run, or a no-op
    assert rc == 0, err
    assert "arbg sample --model" in text and _json(out / "state.json")["finished"]
    state = _json(out / "state.json")["done"]
    assert state["md"]["runs"]["md/reference/replica_00"]["frames"] == 200
    assert _json(out / "md" / "reference" / "replica_00" / "state.json")["frames_done"] == 200
    assert load_run(out / "md" / "reference").n_frames == 200  # none lost, none twice
    assert state["train"]["steps_done"] == 40 and state["train"]["finished"]
    if "train" in killed:  # resumed from its state/, drawing the batches the unbroken run would
        assert _json(out / "train" / "summary.json")["resumed"] == "exact"
    card = _json(out / "model" / "card.json")
    assert card["tau"] in (0.9, 1.0)
    assert card["commands"]["reproduce"].startswith("arbg fit A --termini capped --device cpu")
    assert "noise_floor" in card["evaluation"]["metrics"]
    status = _json(out / "status.json")
    assert status["stage"] == "finished" and status["done_stages"] == list(STAGES)

    rc, text, err = run_cli(capsys, "sample", "--model", out / "model", "--n", "32",
                            "--batch-size", "32", "--out", tmp_path / "samples")
    assert rc == 0, err
    summary = _json(tmp_path / "samples" / "summary.json")
    assert summary["sequence"] == "A" and summary["termini"] == "capped"
    print(f"killed in: {killed}")


RATES = Rates(md_ns_per_day=1000.0, md_platform="Reference",
              train_s_per_step={"base": 2.0, "small": 0.5, "tiny": 0.01}, samples_per_s=500.0,
              energies_per_s=5000.0, device="cpu", cores=2, source="given")


def _request(cfg):
    return request_of("A", "capped", cfg)


def test_plan_splits_the_budget_and_picks_the_size():
    cfg = FitConfig(budget_hours=2)
    plan = make_plan(_request(cfg), cfg, RATES)
    # training share 2880 s: base gets 1309 steps (< 5000), small 5236 (10 % for validations)
    assert plan["train"]["size"] == "small" and plan["train"]["steps"] == 5236
    assert plan["md"]["replicas"] == 1 and plan["md"]["parallel"] == 2
    # MD share 3240 s at 1000 ns/day, less start-up and warm-up: ~37 ns a replica
    assert 35 < plan["md"]["md_ns"] < 38 and plan["md"]["hot_ns"] == plan["md"]["md_ns"]
    assert plan["md"]["train_frames"] == round(0.8 * plan["md"]["frames_per_replica"])
    assert 0.8 * 7200 < plan["estimate_s"] < 1.2 * 7200, plan["estimate_s"]
    assert plan["evaluation"]["n_eval"] <= plan["evaluation"]["n_proposals"] <= 100_000
    assert "within the budget" in plan["note"]
    assert all(s["name"] in describe(plan) for s in plan["stages"])
    big = FitConfig(budget_hours=10)
    assert make_plan(_request(big), big, RATES)["train"]["size"] == "base"


def test_plan_keeps_the_sizes_given():
    cfg = FitConfig(budget_hours=0.01, md_ns=5, hot_ns=1, size="tiny", steps=100, n_tune=50,
                    n_proposals=200, replicas=2, hot_temperature_k=500)
    plan = make_plan(_request(cfg), cfg, RATES)
    assert (plan["md"]["md_ns"], plan["md"]["hot_ns"], plan["md"]["replicas"]) == (5, 1, 2)
    assert (plan["train"]["size"], plan["train"]["steps"]) == ("tiny", 100)
    assert plan["train"]["budget_s"] is None  # the steps were given: no clock stops them
    assert (plan["evaluation"]["n_tune"], plan["evaluation"]["n_proposals"]) == (50, 200)
    assert plan["note"].startswith("the sizes given by flags take longer than the budget")
    line = command_line(_request(cfg))  # the card's "reproduce": flags the parser knows
    args = build_parser().parse_args(line.replace("DIR", "out").split()[1:])
    assert config_from(FitConfig, args) == cfg


def test_a_fit_folder_refuses_another_command(tmp_path, capsys):
    out = tmp_path / "fit"
    cfg = FitConfig(device="cpu", md_ns=0.02, hot_ns=0.01, save_ps=0.1, warmup_ps=1,
                    chunk_frames=20, size="tiny", steps=40, batch_size=32, taus="0.9,1.0",
                    n_tune=64, n_proposals=128, n_eval=32)
    open_folder(out, _request(cfg))
    open_folder(out, _request(cfg))  # the same request: fine
    flags = [f if f != "40" else "41" for f in FLAGS]
    line = refuses(capsys, "fit", *flags, "--out", out, match="other settings")
    assert "--steps 40 (now 41)" in line
    assert not (out / "plan.json").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    refuses(capsys, "fit", *FLAGS, "--out", tmp_path / "other", match="not an arbg fit folder")
    refuses(capsys, "fit", "AXA", "--out", tmp_path / "new", match="x")
    refuses(capsys, "fit", "A", "--termini", "capped", "--md-ns", "0.001", "--out",
            tmp_path / "new", match="md_ns")
    with pytest.raises(ValueError, match="taus"):
        FitConfig(taus="0.9,nine")


def test_md_shards_run_their_replicas_and_the_fit_takes_them_over(tmp_path, capsys):
    """`--md-shard i/n`: each machine (here: each call) runs every n-th replica of the shared
    plan and stops; the fit then finds them finished and simulates nothing again."""
    from arbg_core.fit import Fit
    from arbg_core.fit_stages import md_jobs, md_stage

    out = tmp_path / "fit"
    refuses(capsys, "fit", *FLAGS, "--out", out, "--md-shard", "0/2", match="--plan-only")
    refuses(capsys, "fit", *FLAGS, "--out", out, "--md-shard", "2/2", match="i/n")
    assert run_cli(capsys, "fit", *FLAGS, "--out", out, "--plan-only")[0] == 0
    plan = _json(out / "plan.json")
    fit = Fit(out, _json(out / "fit.json"), config_from(FitConfig, build_parser().parse_args(
        ["fit", *FLAGS, "--out", str(out)])), plan=plan)
    names = [str(folder.relative_to(out)) for folder, _ in md_jobs(fit)]
    assert len(names) == 2 * plan["md"]["replicas"]
    for i in range(2):
        rc, text, err = run_cli(capsys, "fit", *FLAGS, "--out", out, "--md-shard", f"{i}/2")
        assert rc == 0, err
        assert all(name in text for name in names[i::2])
        assert not any(name in text for name in names[1 - i::2])
    stamps = {p: p.stat().st_mtime_ns for p in (out / "md").rglob("*.dcd")}
    assert stamps and all(_json(out / name / "state.json")["frames_done"] > 0 for name in names)
    record = md_stage(fit)  # what the fit's MD stage does next: nothing left to simulate
    assert set(record["runs"]) == set(names)
    assert {p: p.stat().st_mtime_ns for p in (out / "md").rglob("*.dcd")} == stamps


def test_training_under_torchrun_dies_with_the_fit_and_resumes(tmp_path, capsys):
    """--nproc 2: the training stage is a torchrun job of two gloo processes; a SIGKILL of the
    fit stops them (no orphan keeps writing), and the rerun continues to a model trained on
    both (world size 2) that samples."""
    import subprocess

    out = tmp_path / "fit"
    flags = [*FLAGS, "--nproc", "2", "--out", out]
    proc = arbg_process("fit", *flags)
    t0 = time.monotonic()
    while not READY["train"](out) and proc.poll() is None and time.monotonic() - t0 < 400:
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    t0 = time.monotonic()  # torchrun got SIGTERM and stops its workers
    while subprocess.run(["pgrep", "-f", str(out / "train")]).returncode == 0:
        assert time.monotonic() - t0 < 60, "torchrun workers outlived the fit"
        time.sleep(0.2)
    rc, text, err = run_cli(capsys, "fit", *flags)
    assert rc == 0, err
    record = _json(out / "state.json")["done"]["train"]
    assert record["world_size"] == 2 and record["steps_done"] == 40
    rc, _, err = run_cli(capsys, "sample", "--model", out / "model", "--n", "16", "--out",
                         tmp_path / "s")
    assert rc == 0, err
