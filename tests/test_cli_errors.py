"""Data errors and run-directory conflicts through the CLI: one line on stderr, exit 2, before Ray
starts; a stage stopped early keeps the results it did not produce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.cli import main

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")


@pytest.fixture
def no_ray(monkeypatch):
    """Fail loudly if the run gets as far as starting (or joining) Ray."""
    import cluster.connect

    def refuse(*a, **k):
        raise AssertionError("Ray was started before the data was validated")

    monkeypatch.setattr(cluster.connect, "connect", refuse)


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _rows(n: int) -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"q{i}", "options": ["a", "b"], "label": i % 2} for i in range(n)]


@pytest.mark.parametrize("case,message", [
    ("missing", "data.source: file not found"),
    ("no_options", "d.jsonl: row 1: missing field 'options'"),
    ("label_range", "row 2 (id=r2): field 'label' 5 out of range for 2 options"),
    ("empty", "dataset is empty"),
    ("too_few", "exceeds the 10 rows"),
])
def test_data_errors_are_one_line_before_ray(tmp_path, capsys, no_ray, case, message):
    rows = _rows(10)
    if case == "no_options":
        del rows[1]["options"]
    if case == "label_range":
        rows[2]["label"] = 5
    source = str(tmp_path / "nope.jsonl") if case == "missing" else _jsonl(tmp_path / "d.jsonl", [] if case == "empty" else rows)
    code = main(["run", TINY, f"run_dir={tmp_path / 'run'}", f"data.source={source}", "data.weak_train=2",
                 "data.held_out=4", f"data.test={20 if case == 'too_few' else 2}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("w2s: bad data: ") and message in err and err.count("\n") == 1


def test_a_run_dir_of_another_data_config_is_refused_before_ray(tmp_path, capsys, no_ray):
    source = _jsonl(tmp_path / "d.jsonl", _rows(12))
    common = ["data", TINY, f"run_dir={tmp_path / 'run'}", f"data.source={source}", "data.weak_train=2",
              "data.held_out=4", "data.test=2"]
    assert main(common) == 0
    before = sorted(p.name for p in (tmp_path / "run" / "data" / "held_out").iterdir())
    assert main(common + ["data.seed=7"]) == 2
    err = capsys.readouterr().err
    assert "w2s: bad data: " in err and "another data config" in err
    assert sorted(p.name for p in (tmp_path / "run" / "data" / "held_out").iterdir()) == before  # nothing lost


def test_an_early_stop_keeps_the_results_it_did_not_produce(tmp_path):
    from cluster.loader import load_config
    from pipelines.run import RunConfig, run

    root = tmp_path / "run"
    root.mkdir()
    finished = {"stages": {"data": {"seconds": 1.0}, "eval": {"seconds": 9.0}}, "evaluation": {"accuracy": {"x": 0.5}},
                "alignment": {"judge": {}}, "seconds": 99.0}
    (root / "metrics.json").write_text(json.dumps(finished))
    source = _jsonl(tmp_path / "d.jsonl", _rows(12))
    cfg = load_config(RunConfig, TINY, [f"run_dir={root}", f"data.source={source}", "data.weak_train=2",
                                        "data.held_out=4", "data.test=2"])
    run(cfg, lambda m: None, until="data")
    kept = json.loads((root / "metrics.json").read_text())
    assert kept["evaluation"] == finished["evaluation"] and kept["alignment"] == finished["alignment"]
    assert kept["stages"]["eval"] == {"seconds": 9.0} and kept["stages"]["data"]["counts"]["held_out"] == 4
