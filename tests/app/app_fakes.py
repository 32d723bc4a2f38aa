"""A stand-in for app_lib.jobs.Job that AppTests put into the session (the real job would
sample for seconds): it 'runs' for three polls, then fails."""


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
