"""The papers' GPU-cluster setups: each config validates, and its placement plan is built on a
simulated multi-GPU cluster (the session's logical GPUs) without loading any weights."""

from dataclasses import replace
from pathlib import Path

import pytest
import ray
from ray.util.placement_group import placement_group, remove_placement_group

from cluster.plan import plan_resources
from cluster.loader import load_config
from pipelines.run import RunConfig

PAPERS = sorted((Path(__file__).resolve().parents[1] / "configs" / "paper").glob("*.yaml"))
EXPECTED = {  # weak models, strong spec, strong training workers
    "seam_qwen2.yaml": (1, "Qwen/Qwen2-7B", 4),
    "bayes_weaks_qwen7b.yaml": (3, "Qwen/Qwen-7B", 8),
    "reliability_llama.yaml": (1, "meta-llama/Meta-Llama-3-8B", 4),
}


def test_every_paper_has_a_config():
    assert sorted(p.name for p in PAPERS) == sorted(EXPECTED)


@pytest.mark.parametrize("path", PAPERS, ids=lambda p: p.name)
def test_paper_config_plans_on_logical_gpus(ray_cluster, path):
    cfg = load_config(RunConfig, path)
    n_weak, strong, workers = EXPECTED[path.name]
    assert len(cfg.weak.models) == n_weak and cfg.strong.spec == strong
    assert cfg.strong.train.num_workers == workers <= cfg.cluster.num_gpus
    plan = plan_resources({"weak": n_weak, "strong": 1}, cfg.cluster)
    assert plan.total_gpus == n_weak + 1 <= cfg.cluster.num_gpus
    # place it for real on the test cluster's logical GPUs (CPUs scaled down to this 2-core box)
    small = plan_resources({"weak": n_weak, "strong": 1}, replace(cfg.cluster, cpus_per_actor=0.05))
    groups = [placement_group(list(r.bundles), strategy=small.strategy) for r in small.roles.values()]
    try:
        ray.get([g.ready() for g in groups], timeout=60)
        bundles = [b for g in groups for b in g.bundle_specs]
        assert sum(b["GPU"] for b in bundles) == n_weak + 1
    finally:
        for g in groups:
            remove_placement_group(g)
