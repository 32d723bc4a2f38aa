"""Home's "Refine for this sequence" (issue #19, app_lib/refining.py) through AppTest, with real
random-weight `tiny` models and real OpenMM energies: the control is offered for a transferable
model only; a refinement of a few seconds writes a model into ARBG_USER_MODELS_DIR that is then
listed, marked refined and selected; a stopped one leaves nothing; a broken user folder is
skipped with a notice."""

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from app_helpers import messages

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "app.py")
START, JOB, DONE = "refine_start", "arbg_refine_job", "arbg_refine_done"


@pytest.fixture
def dirs(tmp_path, monkeypatch, models_dir):
    """Models: the per-system `tiny` (capped A) and a tiny transferable one (capped, length 1-2);
    an empty user models folder."""
    import torch

    from arbg_core import checkpoint
    from arbg_core.model import ArBG, ModelConfig
    from arbg_core.tokenizer import TokenizerConfig

    models, user = tmp_path / "models", tmp_path / "user"
    shutil.copytree(models_dir / "tiny", models / "tiny")
    torch.manual_seed(0)
    checkpoint.save(models / "general", ArBG(ModelConfig.preset("tiny")),
                    TokenizerConfig(n_bins=64, a=4.5, std=0.25), transferable=True,
                    card={"tau": 1.0, "name": "tiny transferable"},
                    extra={"termini": "capped", "lengths": [1, 2]})
    monkeypatch.setenv("ARBG_MODELS_DIR", str(models))
    monkeypatch.setenv("ARBG_USER_MODELS_DIR", str(user))
    return models, user


def fresh() -> AppTest:
    return AppTest.from_file(APP, default_timeout=60).run()


def typed(at: AppTest, sequence: str) -> AppTest:
    at.radio(key="home_source").set_value("Type a sequence").run()
    at.radio(key="home_termini").set_value("capped")
    return at.text_input(key="home_sequence").set_value(sequence).run()


def offered(at) -> bool:
    return any(b.key == START for b in at.button)


def errors(at):
    return [e.value for e in at.exception] + [e.value for e in at.error]


def start(at: AppTest, minutes: float) -> AppTest:
    at.number_input(key="refine_minutes").set_value(minutes)
    at.number_input(key="refine_batch").set_value(16)
    at.number_input(key="refine_fresh").set_value(32)
    at.button(key=START).click().run()
    assert not errors(at), errors(at)
    assert at.session_state[JOB].running
    return at


def test_offered_for_transferable_models_only(dirs):
    at = fresh()  # capped A: its own `tiny` first
    assert at.selectbox(key="home_model").value == "tiny" and not offered(at)
    assert not [e for e in at.expander if "Refine" in e.label]
    at.selectbox(key="home_model").set_value("general").run()  # the transferable one serves A too
    assert at.button(key=START).label == "Refine general for A (capped)"
    typed(at, "G")  # only the transferable model serves G
    assert at.selectbox(key="home_model").value == "general"
    assert at.button(key=START).label == "Refine general for G (capped)" and not errors(at)


def test_refinement_writes_a_listed_refined_model(dirs):
    _, user = dirs
    at = start(typed(fresh(), "G"), minutes=0.05)  # a 3 s loop
    box = next(e for e in at.expander if e.label.startswith("Refine for this sequence"))
    assert box.proto.expanded and at.get("progress") and at.button(key="refine_stop")
    at.session_state[JOB].wait(120)
    at.run()
    assert not errors(at), errors(at)
    name = "general-refined-G-cap"
    model = at.selectbox(key="home_model")
    assert model.value == name  # offered as the model for G
    label = next(o for o in model.options if o.startswith("[refined"))
    assert "refined from general" in label and "ESS" in label
    assert f"Refined model {name} saved" in messages(at.success).replace("\\", "")
    assert not offered(at)  # the refined model is not transferable
    assert [p.name for p in user.iterdir()] == [name]  # put in place whole, nothing beside it
    card = json.loads((user / name / "card.json").read_text())
    assert card["refined"]["n_fresh"] == 32 and card["parent"]["name"] == "general"
    assert 0 < card["refined"]["config"]["minutes"] <= 0.05
    assert str(user) not in " ".join(messages(x) for x in (at.success, at.info, at.caption))
    # a new session lists it too, before the transferable model it came from
    again = typed(fresh(), "G")
    assert again.selectbox(key="home_model").value == name
    assert again.selectbox(key="home_model").options[1].startswith("general")


def test_stopped_refinement_leaves_nothing(dirs):
    _, user = dirs
    at = start(typed(fresh(), "G"), minutes=5.0)
    at.button(key="refine_stop").click().run()
    at.session_state[JOB].wait(120)
    at.run()
    assert "Refinement stopped: nothing was saved." in messages(at.info) and not errors(at)
    assert not user.exists() or not [p for p in user.iterdir() if not p.name.endswith(".lock")]
    assert offered(at)  # ready again


def test_broken_user_folder_is_skipped_with_a_notice(dirs):
    from arbg_core import checkpoint

    models, user = dirs
    (user / "half").mkdir(parents=True)  # a copy that stopped before config.json
    (user / "bad").mkdir()
    (user / "bad" / "config.json").write_text("{")
    (user / ".mine.tmp-99").mkdir()  # a write in progress: not even mentioned
    shutil.copytree(models / "tiny", user / "tiny-copy")
    (user / "tiny-copy" / checkpoint.WEIGHTS).unlink()
    at = fresh()
    assert not at.exception
    notice = messages(at.warning).replace("\\", "")  # as shown: the markdown unescaped
    assert "half: incomplete, no config.json" in notice
    assert "tiny-copy: incomplete, no model.safetensors" in notice
    assert "bad: its config.json is not a valid checkpoint config" in notice
    assert "mine" not in notice and str(user) not in notice
    assert at.selectbox(key="home_model").value == "tiny"  # the rest is served as before
