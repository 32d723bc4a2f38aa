"""What several AppTest files share: sampling from Home, reading messages, and a stand-in for
app_lib.jobs.Job (the real job would sample for seconds) that 'runs' for three polls, then
fails."""

from streamlit.testing.v1 import AppTest


def sample(at: AppTest, n: int = 64, seed: int = 3) -> AppTest:
    """Set Home's sample count and seed, click Sample, and wait for the run."""
    at.number_input(key="home_n").set_value(n)
    at.number_input(key="home_seed").set_value(seed)
    at.button(key="home_submit").click().run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    return at


def messages(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


class FakeJob:
    """Looks like app_lib.jobs.Job, 'runs' for three polls, then fails."""

    label, result, meta = "A-cap with tiny", None, {}

    def __init__(self):
        from arbg_core.pipeline import SampleConfig

        self.cfg, self.polls, self.error = SampleConfig(n=10), 0, RuntimeError("stopped by the test")

    @property
    def running(self):
        return self.polls < 3

    def wait(self, seconds):
        self.polls += 1

    def snapshot(self):
        return {"fraction": 0.5, "text": "Drawing samples: 5 / 10", "elapsed_s": 1.0}
