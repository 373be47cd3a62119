"""The worked example of docs/ARCHITECTURE.md: a method defined in this file (its examples, its
loss, its report section) is registered and runs through `w2s run` on tiny models; nothing else
in the project changes."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import tiny_run_config
from pipelines.methods import METHODS, Method, register
from pipelines.methods.weak_vote import vote_examples

EPS = 0.1


def confident_examples(rows: list[dict], cfg) -> list[dict]:
    """The vote examples of the rows whose weak confidence is at least the median."""
    cut = float(np.median([r["weak_conf"] for r in rows]))
    return [e for e, r in zip(vote_examples(rows, cfg), rows) if r["weak_conf"] >= cut]


def smoothed_loss(logp, logits, batch, ctx):
    """Label smoothing: (1 - eps) * -log p(y_weak) + eps * mean_k -log p(k)."""
    nll = -logp.gather(1, batch["target"].long().unsqueeze(1)).squeeze(1)
    return ((1 - EPS) * nll - EPS * logp.mean(1)).mean(), {"eps": EPS}


def report(root, metrics) -> list[str]:
    n = metrics["stages"]["strong_w2s"]["confident_smooth"]["examples"]
    return [f"Confident-smooth trained on {n} confident rows.", ""]


@pytest.fixture(scope="module")
def added_method():
    import ray.cloudpickle

    # Ray Train workers unpickle the loss; this test module is not importable there, so it
    # travels by value (a method in pipelines/methods/ is pickled by reference)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    m = register(Method("confident_smooth", "label-smoothed CE on the confident half", confident_examples,
                        loss=smoothed_loss, report=report))
    yield m
    METHODS.pop("confident_smooth", None)
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_method_in_one_file_runs_through_w2s_run(ray_cluster, tmp_path, added_method):
    from pipelines.run import run

    cfg = tiny_run_config(tmp_path / "run", **{"weak.finetune": "false", "annotate.method": "ensemble",
                                               "strong.methods": "[naive, confident_smooth]", "strong.bootstrap": "[]"})
    metrics = run(cfg, lambda m: None)
    rows = cfg.labeller.read(cfg.root / "weak_labels").to_pylist()
    conf = np.array([r["weak_conf"] for r in rows])
    job = metrics["stages"]["strong_w2s"]["confident_smooth"]
    assert job["examples"] == int((conf >= np.median(conf)).sum()) < len(rows)
    assert metrics["stages"]["strong_w2s"]["naive"]["examples"] == len(rows)
    history = [json.loads(line) for line in (cfg.root / "strong_w2s" / "confident_smooth" / "history.jsonl").open()]
    assert history and all(h["eps"] == EPS for h in history)  # the method's own loss ran in the workers
    assert "w2s confident_smooth" in metrics["evaluation"]["accuracy"]
    assert f"Confident-smooth trained on {job['examples']} confident rows." in (cfg.root / "report.md").read_text()


def test_a_method_that_does_not_fit_the_labels_is_refused(added_method):
    register(Method("needs_reliability", "x", confident_examples, labels="reliability"))
    try:
        with pytest.raises(ValueError, match="strong.methods: needs_reliability needs annotate.method: reliability"):
            tiny_run_config("/tmp/x", **{"annotate.method": "ensemble", "strong.methods": "[needs_reliability]"})
    finally:
        METHODS.pop("needs_reliability", None)
