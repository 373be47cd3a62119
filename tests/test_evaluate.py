"""PGR (seed 000 Eq. 4) and the weak blind-spot share on hand-made cases, and the end-to-end
`w2s run` with the tiny profile (then a re-run that skips every stage)."""

import json

import pytest

from conftest import tiny_run_config
import numpy as np
import pyarrow.parquet as pq

from pipelines.evaluate import bootstrap, blind_spot_share, interval, pgr, result_lines
from pipelines.run import run


def test_pgr_cases():
    assert pgr(0.6, 0.5, 0.7) == pytest.approx(0.5)
    assert pgr(0.45, 0.5, 0.7) == pytest.approx(-0.25)  # W2S below the weak supervisor
    assert pgr(0.8, 0.5, 0.7) == pytest.approx(1.5)  # beyond the ceiling
    # ceiling below weak: the denominator is |ceiling - weak| as written in Eq. 4
    assert pgr(0.55, 0.6, 0.5) == pytest.approx(-0.5)
    assert pgr(0.6, 0.5, 0.5) is None  # ceiling equal to weak: undefined


def test_blind_spot_share_cases():
    ceil = [1, 1, 1, 1, 0, 1]
    w2s = [0, 0, 0, 1, 0, 1]
    weak = [0, 1, 0, 0, 0, 1]
    # ceiling right & W2S wrong: rows 0, 1, 2; of those the weak model is wrong on 0 and 2 -> 2/3
    assert blind_spot_share(ceil, w2s, weak) == pytest.approx(2 / 3)
    assert blind_spot_share([1, 1], [1, 1], [0, 0]) is None  # no regression: undefined
    assert blind_spot_share([1, 1], [0, 0], [1, 1]) == 0.0


def _rows(k: int, n: int = 10) -> np.ndarray:
    return np.array([True] * k + [False] * (n - k))


def test_paired_bootstrap_by_hand():
    c = {"weak": _rows(5), "zs": _rows(6), "ceil": _rows(10), "w2s a": _rows(8), "w2s b": _rows(8),
         "w2s all": np.ones(10, bool), "w2s none": np.zeros(10, bool)}
    out = bootstrap(c, "weak", "ceil", "zs", ["w2s a", "w2s b", "w2s all", "w2s none"], n_boot=500)
    assert interval([0.3] * 7) == [0.3, 0.3] and interval([float("nan")]) is None
    assert out["accuracy"]["ceil"] == [1.0, 1.0] and out["accuracy"]["w2s all"] == [1.0, 1.0]
    lo, hi = out["accuracy"]["w2s a"]
    assert 0.4 <= lo < 0.8 < hi <= 1.0
    # the same rows in every resample: identical models differ by exactly 0, never significantly
    assert out["differences"]["w2s a - w2s b"] == {"diff": 0.0, "ci": [0.0, 0.0], "significant": False}
    # right on every row against wrong on every row: a difference of 1 in every resample
    assert out["differences"]["w2s all - w2s none"] == {"diff": 1.0, "ci": [1.0, 1.0], "significant": True}
    # gain over zero-shot = acc - acc(zs) per resample; PGR of the always-right model: (1 - w) / (1 - w) = 1
    assert out["gain"]["w2s none"][1] <= -0.2 and out["pgr"]["w2s all"] == [1.0, 1.0]
    assert len(out["differences"]) == 6


def test_zero_gap_pgr_interval_is_none_and_the_report_flags_below_zero_shot():
    c = {"weak": _rows(5), "zs": _rows(9), "ceil": _rows(5), "w2s a": _rows(4)}
    out = bootstrap(c, "weak", "ceil", "zs", ["w2s a"], n_boot=200)
    assert out["pgr"]["w2s a"] is None  # ceiling == weak on every row: no gap in any resample
    ev = {"accuracy": {n: float(v.mean()) for n, v in c.items()}, "supervisor": "weak", "ceiling": "ceil",
          "zero_shot": "zs", "rows": 10, "pgr": {"w2s a": None}, "gain": {"w2s a": -0.5}, "blind_spot": {"w2s a": None},
          "below_zero_shot": ["w2s a"], "intervals": out}
    text = "\n".join(result_lines(ev))
    assert "**w2s a ends below the strong zero-shot** (-0.500, significantly (interval below 0))" in text
    assert "| w2s a | 0.400 [" in text and "Gain over zero-shot = Acc(w2s) - Acc(`zs`)" in text


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
    # the strong zero-shot is the baseline of every method: gain, its interval, the flag
    for m in methods:
        n = f"w2s {m}"
        assert ev["gain"][n] == pytest.approx(acc[n] - acc["strong zero-shot"])
        lo, hi = ev["intervals"]["gain"][n]
        assert lo <= ev["gain"][n] <= hi
    assert ev["below_zero_shot"] == [n for n, g in ev["gain"].items() if g < 0]
    assert "gain over zero-shot [95% CI]" in (d / "report.md").read_text()
    for f in ("report.md", "accuracy.png", "entropy_buckets.png", "reliability_heatmap.png"):
        assert (d / f).stat().st_size > 0
    # the 8 trained strong models are scored together, cluster.eval_models = 4 per pass: two
    # folders, one actor per model, each loaded once; every accuracy above is read from their columns
    passes = sorted(p for p in (d / "eval").iterdir() if p.name.startswith("strong_") and p.name != "strong_zero-shot")
    assert len(passes) == 2
    column = {f"probs_{n.replace(' ', '_')}": n for n in ["strong ceiling"] + [f"w2s {m}" for m in methods]}
    seen = []
    for p in passes:
        scored = pq.read_table(p)
        mine = [c for c in scored.column_names if c in column]
        assert scored.num_rows == 16 and len(mine) == 4
        for c in mine:
            right = [int(np.argmax(r[c])) == r["label"] for r in scored.to_pylist()]
            assert acc[column[c]] == pytest.approx(np.mean(right))
        seen += mine
    assert sorted(seen) == sorted(column)
    assert len([m for m in logs if m.startswith("annotate strong_") and "actors ready" in m]) == 3  # zero-shot + 2 passes
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
