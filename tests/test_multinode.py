"""Many nodes on one box, for real: Ray's multi-node test cluster (ray.cluster_utils.Cluster, one
raylet per node with its own CPUs and logical GPUs) in a fresh process per scenario
(tests/multinode.py), with simulated weak models (sim: specs, no model compute)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def scenario(*args: str, timeout: int = 400) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "multinode.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_placement_honours_the_strategy_and_refuses_what_no_node_holds():
    out = scenario("placement")
    workers = set(out["worker_nodes"])
    assert len(set(out["PACK"])) == 1 and set(out["PACK"]) <= workers  # 2 models that fit one node: one node
    assert sorted(out["SPREAD"]) == sorted(workers)  # 3 models, 3 nodes: one each
    assert out["too_big"].startswith("cluster.strong_gpu: a strong actor needs 4 GPU(s) on one node, but the "
                                     "largest node has 2")
    assert out["strict_spread"].startswith("cluster.strategy: STRICT_SPREAD needs 4 nodes")


def test_node_lost_mid_annotation_every_row_exactly_once(tmp_path):
    out = scenario("annotate_node_loss", str(tmp_path), "1")
    assert len(out["weak_nodes_before"]) == 2 and out["removed"] in out["weak_nodes_before"]
    assert out["files_before"] >= 1  # the node went while the stage was streaming
    assert out["ids_written"] == out["distinct_ids"] == out["rows"] == out["expected"] == 96
    assert out["rows_new"] == 96 and "interrupted" not in out


def test_no_capacity_left_stops_clearly_and_the_rerun_resumes(tmp_path):
    out = scenario("annotate_node_loss", str(tmp_path), "0")
    assert "stopped after losing cluster capacity (PlacementTimeoutError)" in out["interrupted"]
    assert "run the same command again to resume" in out["interrupted"]
    kept = out["rows_kept"]
    assert 0 < kept < 96 and f"{kept} rows are written" in out["interrupted"]
    # the rerun scored only the missing rows, and every row is there once
    assert out["rows_new"] == 96 - kept
    assert out["ids_written"] == out["distinct_ids"] == out["rows"] == 96


def test_training_across_two_nodes_loses_one_and_resumes_onto_the_same_trajectory(tmp_path):
    out = scenario("train_node_loss", str(tmp_path), timeout=900)
    assert len(out["worker_nodes"]) == 2 and out["removed"] in out["worker_nodes"]  # one worker per node
    assert 3 <= out["steps_at_loss"] < 9  # after the step-3 checkpoint, before the end
    assert out["steps"] == list(range(1, 10))  # history truncated to the checkpoint, then continued
    assert out["lost"] == pytest.approx(out["full"], abs=1e-5)


def test_lost_capacity_tells_cluster_failures_from_bugs():
    from ray.exceptions import ActorDiedError, RayActorError

    from cluster.errors import PlacementTimeoutError, WorkerStartError
    from pipelines.runner import lost_capacity

    def chained(outer, inner, hide=False):
        try:
            try:
                raise inner
            except Exception as e:
                raise outer from (None if hide else e)
        except Exception as got:
            return got

    assert lost_capacity(chained(RuntimeError("batch failed"), ActorDiedError())) == "ActorDiedError"
    assert lost_capacity(PlacementTimeoutError("weak: not ready")) == "PlacementTimeoutError"
    assert lost_capacity(ValueError("a bug")) is None
    # a model that cannot load: WorkerGroup raises WorkerStartError from None over the actor's death
    assert lost_capacity(chained(WorkerStartError("weak", 1, "does not exist"), RayActorError(), hide=True)) is None
