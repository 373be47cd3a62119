"""cluster/: resource plan, placement on (logical) GPUs, WorkerGroup timeouts and cleanup."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from actors.backend import BackendConfig
from actors.strong import StrongActor
from actors.weak import WeakActor
from cluster.config import ClusterConfig
from cluster.errors import InsufficientResourcesError, PlacementTimeoutError, WorkerStartError
from cluster.plan import RolePlan, plan_resources
from cluster.worker_group import WorkerGroup
from conftest import live_actors

TINY = BackendConfig(dtype="float32", max_length=64, max_batch_tokens=512, threads=1)


def test_plan_shapes():
    full = plan_resources({"weak": 3, "strong": 1}, ClusterConfig(cpus_per_actor=0.5))
    assert [len(r.bundles) for r in full.roles.values()] == [3, 1] and full.total_gpus == 4
    assert full.roles["weak"].bundles[0] == {"GPU": 1.0, "CPU": 0.5}
    half = plan_resources({"weak": 3, "strong": 1}, ClusterConfig(weak_gpu=0.5, cpus_per_actor=0.5))
    weak = half.roles["weak"]
    assert weak.bundle_of_actor == (0, 0, 1) and [b["CPU"] for b in weak.bundles] == [1.0, 0.5]
    assert half.total_gpus == 3
    big = plan_resources({"strong": 2}, ClusterConfig(strong_gpu=2, cpus_per_actor=1))
    assert big.roles["strong"].bundles == ({"GPU": 2.0, "CPU": 1}, {"GPU": 2.0, "CPU": 1}) and big.total_gpus == 4
    # CPUs spread over actors, keeping reserve_cpus for Ray Data
    auto = plan_resources({"weak": 2}, ClusterConfig(reserve_cpus=0.5), cluster_cpus=2)
    assert auto.roles["weak"].cpus_per_actor == 0.75


def _kwargs(n, prefix):
    return [{"name": f"{prefix}{i}", "spec": f"tiny:llama:{i}", "backend": TINY} for i in range(n)]


@pytest.mark.parametrize("weak_gpu,expect_distinct", [(1.0, 4), (0.5, 2)])
def test_weak_and_strong_get_their_own_gpus(ray_cluster, weak_gpu, expect_distinct):
    cfg = ClusterConfig(weak_gpu=weak_gpu, cpus_per_actor=0.1, ready_timeout_s=120)
    plan = plan_resources({"weak": 4, "strong": 1}, cfg)
    with WorkerGroup(WeakActor, plan.roles["weak"], cfg, _kwargs(4, "w")) as weak, \
            WorkerGroup(StrongActor, plan.roles["strong"], cfg, _kwargs(1, "s")) as strong:
        weak_ids = [tuple(i["gpu_ids"]) for i in weak.infos]
        strong_ids = [tuple(i["gpu_ids"]) for i in strong.infos]
        assert all(len(g) == 1 for g in weak_ids + strong_ids)
        assert len(set(weak_ids)) == expect_distinct  # 0.5: two weak models per GPU
        assert not set(weak_ids) & set(strong_ids)  # the strong model never shares a weak GPU
        assert {i["role"] for i in weak.infos} == {"weak"} and strong.infos[0]["role"] == "strong"
        # the actors really score (tiny models), one call per actor
        probs = weak.call_all("score_options", ["Q?\nA. x\nB. y\nAnswer:"], [[" A", " B"]])
        assert len(probs) == 4 and all(abs(p[0].sum() - 1) < 1e-6 for p in probs)


def _pg_states():
    return {pg_id: t["state"] for pg_id, t in ray.util.placement_group_table().items()}


def test_placement_timeout_cleans_up(ray_cluster):
    cfg = ClusterConfig(ready_timeout_s=1.5)
    # a GPU bundle larger than any node is refused before Ray is asked (it would wait for ever)
    too_big = RolePlan("weak", 1, 100.0, 0.1, ({"GPU": 100.0, "CPU": 0.1},), (0,))
    before = set(_pg_states())
    with pytest.raises(InsufficientResourcesError, match="^cluster.weak_gpu: a weak actor needs 100 GPU"):
        WorkerGroup(WeakActor, too_big, cfg, _kwargs(1, "w"))
    assert set(_pg_states()) == before
    # one that a node could hold but the cluster never frees (100 CPUs): the timeout, then cleanup
    never_free = RolePlan("weak", 1, 1.0, 100.0, ({"GPU": 1.0, "CPU": 100.0},), (0,))
    with pytest.raises(PlacementTimeoutError, match="not ready after 1.5 s"):
        WorkerGroup(WeakActor, never_free, cfg, _kwargs(1, "w"))
    new = {k: v for k, v in _pg_states().items() if k not in before}
    assert new and all(state == "REMOVED" for state in new.values())


def test_actor_start_failure_is_typed_and_cleaned_up(ray_cluster):
    cfg = ClusterConfig(cpus_per_actor=0.1, ready_timeout_s=60, max_restarts=0)
    plan = plan_resources({"weak": 2}, cfg)
    kwargs = _kwargs(2, "w")
    kwargs[1]["spec"] = "/no/such/model"
    before = set(_pg_states())
    with pytest.raises(WorkerStartError, match=r"weak\[1\] failed to start: .*does not exist"):
        WorkerGroup(WeakActor, plan.roles["weak"], cfg, kwargs)
    new = {k: v for k, v in _pg_states().items() if k not in before}
    assert new and all(state == "REMOVED" for state in new.values())
    assert live_actors("WeakActor") == []


def test_local_cluster_serves_the_state_api_with_the_dashboard():
    # a fresh process: this one may already be attached to the test cluster (no dashboard); the
    # State API call names its cluster, since two local clusters run on this machine then
    code = ("from cluster.config import ClusterConfig\nfrom cluster.connect import connect\n"
            "from ray.util.state import list_actors\nimport ray\n"
            "connect(ClusterConfig(num_cpus=1, namespace='dash'))\n"
            "print('actors', len(list_actors(address=ray.get_runtime_context().gcs_address)))\nray.shutdown()\n")
    # without RAY_ADDRESS, which ray.init set in this process when it started the test cluster:
    # with it the child would join that cluster (no dashboard) instead of starting its own
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env,
                         cwd=str(Path(__file__).parents[1]))
    assert out.returncode == 0 and "actors " in out.stdout, out.stderr[-2000:]
