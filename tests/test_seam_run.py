"""SEAM inside `w2s run` (annotate.method=seam): the SEAM stage writes weak_labels, each SEAM
label source (pipelines/methods/seam.py SOURCES) trains its own strong model on exactly its rows
and labels, evaluation and the report include them. Tiny random models on the shared Ray cluster
(configs/tiny_seam.yaml)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from actors.prompts import TemplateConfig
from pipelines import methods
from pipelines.methods.seam import SOURCES
from tests.conftest import tiny_run_config

TEMPLATE = TemplateConfig(template="{prompt}\nSolutions: {options}\nAnswer:", option_line="{option}",
                          option_sep=" | ", answer="text")


def weak_label_examples(rows, method, template):
    return methods.method(method).examples(rows, SimpleNamespace(template=template))


def _rows():
    base = {"prompt": "p", "options": ["a", "b"], "label": 1, "weak_label": 0, "naive_label": 1,
            "self_reward_label": 1, "ws_ensemble_label": 0, "auxconf_label": 1}
    keeps = [(True, False, True), (False, True, True), (True, True, False)]
    return [dict(base, id=f"r{i}", weak_label=i % 2, kept=k, uncertain_keep=u, wsc_keep=w)
            for i, (k, u, w) in enumerate(keeps)]


def test_each_seam_source_takes_its_column_and_its_rows():
    rows = _rows()
    for method, (column, keep) in SOURCES.items():
        ex = weak_label_examples(rows, method, TEMPLATE)
        want = [r for r in rows if keep is None or r[keep]]
        assert [e["id"] for e in ex] == [r["id"] for r in want], method
        assert [e["target"] for e in ex] == [r[column] for r in want], method
    assert [e["id"] for e in weak_label_examples(rows, "seam", TEMPLATE)] == ["r0", "r2"]


def test_seam_source_needs_seam_labels():
    rows = [{"id": "x", "prompt": "p", "options": ["a", "b"], "label": 0, "weak_label": 0, "weak_probs": [1, 0],
             "probs_w": [1, 0]}]
    with pytest.raises(ValueError, match="annotate.method=seam"):
        weak_label_examples(rows, "self_reward", TEMPLATE)


def test_config_checks_name_the_field():
    with pytest.raises(ValueError, match="strong.methods: seam needs annotate.method: seam"):
        tiny_run_config("/tmp/x", "tiny", **{"strong.methods": "[seam]"})
    with pytest.raises(ValueError, match="annotate.method: seam uses one aligned weak model"):
        tiny_run_config("/tmp/x", "tiny", **{"annotate.method": "seam", "strong.methods": "[naive]"})


@pytest.fixture(scope="module")
def seam_run(ray_cluster, tmp_path_factory):
    from pipelines.run import run

    cfg = tiny_run_config(tmp_path_factory.mktemp("seam_run") / "run", "tiny_seam")
    logs = []
    metrics = run(cfg, logs.append)
    return cfg, metrics, logs


def test_w2s_run_with_seam_labels(seam_run):
    from pipelines.seam_annotate import as_weak_labels

    cfg, metrics, logs = seam_run
    root = cfg.root
    wl = metrics["stages"]["weak_labels"]
    assert wl["method"] == "seam" and wl["rows"] == 8 and wl["kept"] == 4
    table = as_weak_labels(root / "weak_labels")
    rows = table.to_pylist()
    # SEAM's decision is the weak label (and the single weak model's probabilities)
    assert all(r["probs_tiny_a"] == r["weak_probs"] and r["weak_label"] == int(np.argmax(r["weak_probs"]))
               for r in rows)
    assert sum(r["kept"] for r in rows) == 4
    # each method trained on its own rows: seam on the kept half, the others on every row
    done = {m: json.loads((root / "strong_w2s" / m / "_SUCCESS.json").read_text()) for m in cfg.strong.methods}
    assert done["seam"]["examples"] == 4
    assert done["naive"]["examples"] == done["naive_w2s"]["examples"] == done["self_reward"]["examples"] == 8
    # ... and the models differ (different labels / rows after the same seed and steps)
    assert done["seam"]["first_loss"] != done["naive_w2s"]["first_loss"] or \
        done["seam"]["final_loss"] != done["naive_w2s"]["final_loss"]
    ev = metrics["evaluation"]
    assert set(ev["pgr"]) == {f"w2s {m}" for m in cfg.strong.methods}
    assert all(0.0 <= a <= 1.0 for a in ev["accuracy"].values())
    report = (root / "report.md").read_text()
    assert "Table 2" in report and "SEAM w/o Filter" in report and "| w2s seam |" in report


def test_rerun_skips_every_stage(seam_run):
    from pipelines.run import run

    cfg, _, _ = seam_run
    logs = []
    run(cfg, logs.append)
    assert any("seam weak_labels: complete, skipped" in m for m in logs)
    assert sum("complete, skipped" in m for m in logs) >= 1 + 1 + len(cfg.strong.methods)
