"""`seeds: [...]`: one run per seed, shared stages copied, mean and two-level bootstrap intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cluster.loader import load_config
from pipelines.run import RunConfig
from pipelines.seeds import aggregate, seeded, shared_dirs

TINY = "configs/tiny.yaml"


def _ev(correct: dict[str, str], ids=None) -> dict:
    acc = {n: s.count("1") / len(s) for n, s in correct.items()}
    return {"accuracy": acc, "row_correct": correct, "row_ids": ids or [str(i) for i in range(len(next(iter(correct.values()))))],
            "supervisor": "weak", "ceiling": "ceil", "zero_shot": "zs",
            "pgr": {"w2s a": 0.0, "w2s b": 0.0}}


def test_aggregate_by_hand():
    """Two seeds on the same 4 rows. Means: weak 0.25, ceil 1.0, zs 0.5, a (0.75 + 1.0) / 2 = 0.875,
    b 0.5; PGR of means for a = (0.875 - 0.25) / 0.75 = 0.8333; gain a = 0.375."""
    e0 = _ev({"weak": "1000", "ceil": "1111", "zs": "1100", "w2s a": "1110", "w2s b": "1100"})
    e1 = _ev({"weak": "1000", "ceil": "1111", "zs": "1100", "w2s a": "1111", "w2s b": "0011"})
    agg = aggregate({0: e0, 1: e1}, n_boot=500)
    assert agg["shared_test_rows"] is True
    assert agg["accuracy"]["w2s a"]["mean"] == pytest.approx(0.875)
    assert agg["accuracy"]["w2s a"]["per_seed"] == [0.75, 1.0]
    assert agg["pgr"]["w2s a"]["mean"] == pytest.approx(0.625 / 0.75)
    assert agg["gain"]["w2s a"]["mean"] == pytest.approx(0.375)
    assert agg["gain"]["w2s b"]["mean"] == pytest.approx(0.0)
    # the ceiling is right on every row in every seed: no resample can move it
    assert agg["accuracy"]["ceil"]["ci"] == [1.0, 1.0]
    lo, hi = agg["accuracy"]["w2s a"]["ci"]
    assert 0.5 <= lo <= 0.875 <= hi <= 1.0
    # b equals zs in seed 0 and differs row by row in seed 1: a gain of 0, not significant
    assert agg["gain"]["w2s b"]["significant"] is False
    assert agg["differences"]["w2s a - w2s b"]["mean"] == pytest.approx(0.375)


def test_aggregate_significance_and_own_rows():
    """a beats zs on 40 of 50 rows in all three seeds (each its own rows): the gain excludes 0."""
    rng = np.random.default_rng(1)
    evs = {}
    for s in range(3):
        a = "".join("1" if x < 0.9 else "0" for x in rng.random(50))
        evs[s] = _ev({"weak": "0" * 50, "ceil": "1" * 50, "zs": "1" * 10 + "0" * 40, "w2s a": a, "w2s b": "1" * 10 + "0" * 40},
                     ids=[f"{s}-{i}" for i in range(50)])
    agg = aggregate(evs, n_boot=500)
    assert agg["shared_test_rows"] is False
    assert agg["gain"]["w2s a"]["significant"] is True and agg["gain"]["w2s a"]["ci"][0] > 0
    assert agg["gain"]["w2s b"]["significant"] is False  # identical to zs on every row


def test_seeded_config_and_errors(tmp_path):
    cfg = load_config(RunConfig, TINY, [f"run_dir={tmp_path}", "seeds=[3,5]"])
    sub = seeded(cfg, 5)
    assert sub.seeds == [] and sub.root == tmp_path / "seed_5"
    assert sub.strong.train.seed == 5 and sub.weak.train.seed == 5
    assert sub.data.seed == cfg.data.seed  # the test rows stay the same
    assert shared_dirs(cfg) == ["data", "eval/strong_zero-shot"]  # the tiny weak models fine-tune
    with pytest.raises(ValueError, match="seeds"):
        load_config(RunConfig, TINY, [f"run_dir={tmp_path}", "seeds=[1,1]"])


def test_seeds_run_tiny(tmp_path, ray_cluster):
    """Two seeds of a small tiny run: the zero-shot weak labels and the zero-shot eval are made once
    and reused, the training differs by seed, the aggregate is written."""
    from pipelines.run import run

    cfg = load_config(RunConfig, TINY, [f"run_dir={tmp_path}", "seeds=[0,1]", "weak.finetune=false",
                                  "strong.methods=[naive,ensemble]", "strong.bootstrap=[]", "data.test=12",
                                  "data.held_out=16"])
    logs = []
    metrics = run(cfg, log=lambda m: logs.append(str(m)))
    assert any("seed_1 reuses data, eval/strong_zero-shot, weak_labels, eval/weak" in m for m in logs)
    assert sum("weak_labels" in m and "complete, skipped" in m for m in logs) >= 1
    agg = metrics["seeds"]
    assert agg["seeds"] == [0, 1] and agg["rows"] == 12
    zs = agg["accuracy"]["strong zero-shot"]["per_seed"]
    assert zs[0] == zs[1]  # one zero-shot evaluation, copied
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved["seeds"]["gain"]) == {"w2s naive", "w2s ensemble"}
    for s in (0, 1):
        assert (tmp_path / f"seed_{s}" / "metrics.json").is_file()
    assert (tmp_path / "seeds.png").is_file() and "mean accuracy" in (tmp_path / "report.md").read_text()
