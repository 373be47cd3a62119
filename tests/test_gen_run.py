"""`w2s run` on a generation task (task: generation, configs/tiny_gen.yaml): joint decoding labels
held_out, the strong model is trained per method (SFT on the reference, the top beam, the joint
target; token-level soft labels), greedy test answers are scored by token F1. Tiny random
models on the shared Ray cluster."""

import json

import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import tiny_run_config


@pytest.fixture(scope="module")
def gen_run(ray_cluster, tmp_path_factory):
    from pipelines.run import run

    cfg = tiny_run_config(tmp_path_factory.mktemp("gen_run") / "run", "tiny_gen")
    logs = []
    return cfg, run(cfg, logs.append), logs


def test_joint_labels_feed_each_method(gen_run):
    cfg, metrics, _ = gen_run
    root = cfg.root
    rows = pq.read_table(root / "weak_labels" / "joint_labels.parquet").to_pylist()
    assert len(rows) == 8 and metrics["stages"]["weak_labels"]["method"] == "joint"
    with_target = [r for r in rows if r["target"]]
    assert with_target and all(len(r["target_token_logps"]) == 2 for r in with_target)
    done = {m: json.loads((root / "strong_w2s" / m / "_SUCCESS.json").read_text()) for m in cfg.strong.methods}
    assert done["joint"]["examples"] == done["soft_tokens"]["examples"] == len(with_target)
    assert done["top_beam"]["examples"] == sum(bool(r["weak_top"][0]) for r in rows)
    ceiling = json.loads((root / "strong_ceiling" / "_SUCCESS.json").read_text())
    assert ceiling["examples"] == 8 and ceiling["method"] == "ground_truth"
    # soft labels train a different model from plain SFT on the same targets
    from actors.registry import load_model

    a, _ = load_model(str(root / "strong_w2s" / "joint" / "model"))
    b, _ = load_model(str(root / "strong_w2s" / "soft_tokens" / "model"))
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_eval_scores_every_model_by_token_f1(gen_run):
    from pipelines.joint_annotate import token_f1

    cfg, metrics, logs = gen_run
    ev = metrics["evaluation"]
    names = {"weak joint", "weak tiny_a", "weak tiny_b", "strong zero-shot", "strong ceiling",
             *(f"w2s {m}" for m in cfg.strong.methods)}
    assert set(ev["accuracy"]) == names and ev["metric"] == "token F1" and ev["rows"] == 4
    answers = pq.read_table(cfg.root / "eval" / "w2s_joint" / "answers.parquet").to_pylist()
    assert ev["accuracy"]["w2s joint"] == pytest.approx(
        sum(token_f1(r["answer"], r["reference"]) for r in answers) / len(answers))
    assert set(ev["pgr"]) == {f"w2s {m}" for m in cfg.strong.methods}
    # intervals over the rows' token F1 (paired): each holds its model's mean F1; gain = F1 - zero-shot's
    for n, ci in ev["intervals"]["accuracy"].items():
        assert ci[0] - 1e-9 <= ev["accuracy"][n] <= ci[1] + 1e-9
    assert ev["gain"]["w2s joint"] == pytest.approx(ev["accuracy"]["w2s joint"] - ev["accuracy"]["strong zero-shot"])
    report = (cfg.root / "report.md").read_text()
    assert "test token F1" in report and "joint decoding (Eq. 6)" in report
    assert any("answers (" in m for m in logs)


def test_rerun_skips(gen_run):
    from pipelines.run import run

    cfg, _, _ = gen_run
    logs = []
    run(cfg, logs.append)
    assert sum("complete, skipped" in m for m in logs) >= 3 + len(cfg.strong.methods)
