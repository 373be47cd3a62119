"""Ray Train's controller poll interval (OptimConfig.controller_poll_s, training.launcher.controller_poll).

Ray Train V2 reads RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default) from the driver's environment
when fit() starts, and propagates it to the controller and the workers alike. A finished job waited
3.0-3.7 s for the next poll and shutdown at 2 s, 0.4-1.0 s at 0.5 (docs/measurements.md). A real
Ray Train worker started through training.launcher sees the configured value; the driver's
environment is restored afterwards."""

import os
from pathlib import Path

import pytest

from training import launcher
from training.sft_config import TrainConfig


def test_controller_poll_sets_and_restores(monkeypatch):
    monkeypatch.delenv(launcher.POLL_ENV, raising=False)
    with launcher.controller_poll(0.5):
        assert os.environ[launcher.POLL_ENV] == "0.5"
    assert launcher.POLL_ENV not in os.environ
    monkeypatch.setenv(launcher.POLL_ENV, "3")
    with pytest.raises(RuntimeError), launcher.controller_poll(0.25):
        assert os.environ[launcher.POLL_ENV] == "0.25"
        raise RuntimeError("the job failed")
    assert os.environ[launcher.POLL_ENV] == "3"  # restored on failure too


def test_poll_interval_must_be_positive():
    with pytest.raises(ValueError, match="^controller_poll_s: must be > 0"):
        TrainConfig(controller_poll_s=0)
    assert TrainConfig().controller_poll_s == 0.5


def test_ray_train_job_runs_with_the_configured_poll(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.delenv(launcher.POLL_ENV, raising=False)

    def env_worker(job):  # nested: pickled by value (this test module is not importable in workers)
        import os

        Path(job["out"]).write_text(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "unset"))

    out = tmp_path / "poll.txt"
    cfg = TrainConfig(num_workers=1, cpus_per_worker=1, engine="torch", controller_poll_s=0.25)
    launcher.launch(env_worker, {"out": str(out)}, cfg, name="poll", storage=tmp_path / "rt", use_gpu=False)
    assert out.read_text() == "0.25"
    assert launcher.POLL_ENV not in os.environ
