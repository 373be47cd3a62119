"""Shared fixtures: one real local Ray cluster per test session, with logical GPUs."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub here: fail fast instead of retrying
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import pytest  # noqa: E402

NUM_GPUS = 6  # logical GPUs: enough for 4 weak models + the strong model + 1 spare


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, num_gpus=NUM_GPUS, include_dashboard=False,
                 namespace="w2s-tests", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def smollm2_ready():
    from actors.embedded import MANIFEST, model_dir

    if not (model_dir("smollm2-135m-instruct") / MANIFEST).is_file():
        pytest.fail("embedded models are not set up: run `bash scripts/setup.sh` (README) first")
    return "embedded:smollm2-135m-instruct"


def tiny_run_config(run_dir, profile="tiny", **over):
    """A tiny profile (configs/<profile>.yaml) with overrides, as a validated RunConfig."""
    from pathlib import Path

    from cluster.loader import load_config
    from pipelines.run import RunConfig

    root = Path(__file__).resolve().parents[1]
    overrides = [f"run_dir={run_dir}"] + [f"{k}={v}" for k, v in over.items()]
    return load_config(RunConfig, root / "configs" / f"{profile}.yaml", overrides)


def live_actors(class_name: str) -> list[dict]:
    """GCS actor table rows (no dashboard needed): State, Pid, NumRestarts per actor."""
    import ray._private.state as state

    return [a for a in state.actors().values() if a["ActorClassName"] == class_name and a["State"] != "DEAD"]
