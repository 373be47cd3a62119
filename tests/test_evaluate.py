"""PGR (seed 000 Eq. 4) and the deception score (seed 002) on hand-made cases, and the end-to-end
`w2s run` with the tiny profile (then a re-run that skips every stage)."""

import json

import pytest

from conftest import tiny_run_config
from pipelines.evaluate import deception_score, pgr
from pipelines.run import run


def test_pgr_cases():
    assert pgr(0.6, 0.5, 0.7) == pytest.approx(0.5)
    assert pgr(0.45, 0.5, 0.7) == pytest.approx(-0.25)  # W2S below the weak supervisor
    assert pgr(0.8, 0.5, 0.7) == pytest.approx(1.5)  # beyond the ceiling
    # ceiling below weak: the denominator is |ceiling - weak| as written in Eq. 4
    assert pgr(0.55, 0.6, 0.5) == pytest.approx(-0.5)
    assert pgr(0.6, 0.5, 0.5) is None  # ceiling equal to weak: undefined


def test_deception_score_cases():
    ceil = [1, 1, 1, 1, 0, 1]
    w2s = [0, 0, 0, 1, 0, 1]
    weak = [0, 1, 0, 0, 0, 1]
    # ceiling right & W2S wrong: rows 0, 1, 2; of those the weak model is wrong on 0 and 2 -> 2/3
    assert deception_score(ceil, w2s, weak) == pytest.approx(2 / 3)
    assert deception_score([1, 1], [1, 1], [0, 0]) is None  # no regression: undefined
    assert deception_score([1, 1], [0, 0], [1, 1]) == 0.0


@pytest.fixture(scope="module")
def tiny_run(ray_cluster, tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    logs = []
    metrics = run(tiny_run_config(d), logs.append)
    return d, metrics, logs


def test_tiny_run_end_to_end(tiny_run):
    d, metrics, logs = tiny_run
    ev = metrics["evaluation"]
    methods = ["naive", "aux_conf", "ensemble", "bayes", "rel_filter", "rel_reweight", "bootstrap"]
    assert set(ev["pgr"]) == {f"w2s {m}" for m in methods}
    for m in methods:
        assert (d / "strong_w2s" / m / "model" / "model.safetensors").is_file()
    for name in ("weak tiny_a", "weak tiny_b", "weak ensemble", "strong ceiling", "strong zero-shot"):
        assert 0.0 <= ev["accuracy"][name] <= 1.0
    # PGR in metrics.json is Eq. 4 applied to the accuracies next to it
    acc, sup = ev["accuracy"], ev["accuracy"]["weak ensemble"]
    for m in methods:
        expected = pgr(acc[f"w2s {m}"], sup, acc["strong ceiling"])
        assert ev["pgr"][f"w2s {m}"] == (None if expected is None else pytest.approx(expected))
    assert json.loads((d / "metrics.json").read_text())["evaluation"]["accuracy"] == acc
    for f in ("report.md", "accuracy.png", "entropy_buckets.png", "reliability_heatmap.png"):
        assert (d / f).stat().st_size > 0
    # the rel_filter strong model saw only kept rows: half of 24, times 2 weak models x 3 orders
    summary = json.loads((d / "strong_w2s" / "rel_filter" / "_SUCCESS.json").read_text())
    assert summary["examples"] == 12 * 2 * 3


def test_rerun_skips_every_stage(tiny_run):
    d, metrics, _ = tiny_run
    logs = []
    again = run(tiny_run_config(d), logs.append)
    assert not [line for line in logs if line.startswith("train ") and "skipped" not in line]
    trainings = [line for line in logs if line.startswith("train ")]
    assert len(trainings) == 2 + 1 + 6 + 2  # weak_sft x2, ceiling, 6 methods, bootstrap x2 (intermediate, final)
    assert all(line.endswith("complete, skipped") for line in trainings)
    assert again["evaluation"]["accuracy"] == metrics["evaluation"]["accuracy"]
    assert again["seconds"] < 60
