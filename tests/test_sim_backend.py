"""The simulated backend (sim: specs): deterministic pseudo-scores, a fixed latency per batch,
actors sharing a logical GPU taking turns, and clear errors where a real model is needed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from actors.backend import BackendConfig
from actors.registry import ModelSpecError, load_model, load_tokenizer, resolve
from actors.sim_backend import SimBackend, parse_sim


def test_spec_parsing_and_errors():
    assert parse_sim("sim:a") == ("a", 0.0) and parse_sim("sim:m7:250") == ("m7", 0.25)
    assert resolve("sim:a:5").kind == "sim"
    for bad in ("sim:", "sim:a:fast", "sim:a:-1", "sim:a:1:2"):
        with pytest.raises(ModelSpecError, match="sim spec"):
            resolve(bad)
    with pytest.raises(ModelSpecError, match="simulated model for scale tests"):
        load_model("sim:a")
    with pytest.raises(ModelSpecError, match="no weights and no tokenizer"):
        load_tokenizer("sim:a")


def test_scores_are_deterministic_per_model_and_text():
    a1, a2, b = SimBackend("sim:a", BackendConfig()), SimBackend("sim:a:1", BackendConfig()), SimBackend("sim:b", BackendConfig())
    texts, labels = ["q one", "q two"], [["A", "B", "C"], ["A", "B"]]
    pa, pb = a1.score_options(texts, labels), b.score_options(texts, labels)
    assert [p.tolist() for p in pa] == [p.tolist() for p in a2.score_options(texts, labels)]  # same name, same scores
    assert any(not np.allclose(x, y) for x, y in zip(pa, pb))  # another model, other scores
    assert [len(p) for p in pa] == [3, 2] and all(abs(p.sum() - 1) < 1e-12 for p in pa)
    assert a1.tokens_seen == 3 + 3  # words + 1 per text
    out = a1.generate(["x", "y"], 2, 4, temperature=1.0, seed=3)
    assert out == a2.generate(["x", "y"], 2, 4, temperature=1.0, seed=3) and len(out[0]) == 2
    assert [len(t.split()) for t, _ in out[0]] == [4, 4]


def test_latency_is_per_batch():
    sim = SimBackend("sim:a:60", BackendConfig())
    t0 = time.time()
    for _ in range(3):
        sim.score_options(["t"] * 50, [["A", "B"]] * 50)
    assert 0.18 <= time.time() - t0 < 1.0 and sim.batches == 3


@pytest.mark.parametrize("share,turns", [(1.0, 1), (0.5, 2)])
def test_actors_sharing_a_gpu_take_turns(ray_cluster, share, turns):
    import ray

    from actors.weak import WeakActor
    from cluster.config import ClusterConfig
    from cluster.plan import plan_resources
    from cluster.worker_group import WorkerGroup

    cfg = ClusterConfig(weak_gpu=share, cpus_per_actor=0.25)
    plan = plan_resources({"weak": 2}, cfg, 2.0)
    kwargs = [{"name": f"s{i}", "spec": f"sim:s{i}:1000", "backend": BackendConfig()} for i in range(2)]
    with WorkerGroup(WeakActor, plan.roles["weak"], cfg, kwargs) as g:
        assert len({tuple(i["gpu_ids"]) for i in g.infos}) == (2 if share == 1.0 else 1)
        ray.get([a.score_options.remote(["warm"], [["A", "B"]]) for a in g.actors])
        t0 = time.time()
        ray.get([a.score_options.remote(["t"], [["A", "B"]]) for a in g.actors])
        wall = time.time() - t0
    # one GPU each: the two 1 s batches overlap (well under 2 s); one GPU shared: they take turns
    assert (wall < 1.9) if turns == 1 else (wall >= 2.0), wall
