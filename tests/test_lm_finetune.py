"""strong.lm_finetune: Burns et al.'s generative finetuning (LM loss on unlabelled task text)
before the ceiling and the W2S methods, reported beside the same methods without it."""

from __future__ import annotations

import json

import pytest

from actors.prompts import TemplateConfig
from cluster.loader import load_config
from pipelines.run import RunConfig
from training.examples import lm_examples

TINY = "configs/tiny.yaml"
LM_TRAIN = ("strong.lm_finetune.train={engine: torch, lr: 1.0e-3, max_steps: 3, micro_batch: 4, max_length: 128, "
            "cpus_per_worker: 1}")


def test_lm_examples_use_text_not_labels():
    rows = [{"id": "a", "prompt": "Sky?", "options": ["blue", "red"], "label": 1},
            {"id": "b", "prompt": "Sea?", "options": ["wet", "dry"], "label": None}]
    ex = lm_examples(rows, TemplateConfig(template="Q: {prompt}\n{options}\nA:", answer="text"))
    assert [e["id"] for e in ex] == ["a", "b"]  # unlabelled rows too: the labels are never read
    assert ex[0]["text"] == "\n" and ex[0]["response"].startswith("Q: Sky?\n") and "blue" in ex[0]["response"]
    assert ex[0]["target"] == ex[1]["target"] == 0


@pytest.mark.parametrize("override, key", [
    ("strong.lm_finetune.splits=[test]", "strong.lm_finetune.splits"),
    ("strong.lm_finetune.methods=[vote]", "strong.lm_finetune.methods"),
])
def test_bad_lm_finetune_config_names_the_key(override, key, tmp_path):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config(RunConfig, TINY, [f"run_dir={tmp_path}", "strong.lm_finetune.enabled=true", override])


def test_method_must_also_run_without_lm(tmp_path):
    with pytest.raises(ValueError, match="lm_finetune.methods"):
        load_config(RunConfig, TINY, [f"run_dir={tmp_path}", "strong.methods=[naive]", "strong.bootstrap=[]",
                                      "strong.lm_finetune.enabled=true", "strong.lm_finetune.methods=[aux_conf]"])


def test_lm_finetune_run_tiny(tmp_path, ray_cluster):
    from pipelines.run import run

    cfg = load_config(RunConfig, TINY, [f"run_dir={tmp_path}", "weak.finetune=false", "strong.methods=[naive]",
                                        "strong.bootstrap=[]", "data.test=8", "data.held_out=16", "data.weak_train=8",
                                        "strong.lm_finetune.enabled=true", LM_TRAIN])
    metrics = run(cfg, log=lambda m: None)
    lm = metrics["stages"]["strong_lm"]
    assert lm["examples"] == 8 + 16 and lm["steps"] == 3  # the text of weak_train + held_out, no test rows
    hist = [json.loads(x) for x in (tmp_path / "strong_lm" / "history.jsonl").read_text().splitlines()]
    assert hist[-1]["loss"] < hist[0]["loss"]  # the LM loss on the task text went down
    acc = metrics["evaluation"]["accuracy"]
    assert {"w2s naive", "w2s naive +lm", "strong ceiling", "strong ceiling +lm"} <= set(acc)
    assert "w2s naive - w2s naive +lm" in metrics["evaluation"]["intervals"]["differences"]
    # the +lm job starts from strong_lm's weights: same examples and seed, another first loss
    w2s = metrics["stages"]["strong_w2s"]
    assert w2s["naive +lm"]["examples"] == w2s["naive"]["examples"]
    assert w2s["naive +lm"]["first_loss"] != pytest.approx(w2s["naive"]["first_loss"], abs=1e-6)
    report = (tmp_path / "report.md").read_text()
    assert "| strong ceiling |" in report.split("Generative finetuning")[1]  # the ceiling is compared too


def test_lm_lines_pair_each_model_with_its_lm_twin():
    from pipelines.evaluate import lm_lines

    # 4 rows: naive right on 0, 1; naive +lm right on 0, 1, 2, 3 -> +0.500; every resample keeps the sign
    ev = {"row_correct": {"w2s naive": "1100", "w2s naive +lm": "1111", "strong ceiling": "1111",
                          "strong ceiling +lm": "1111", "weak a": "0000"}}
    text = "\n".join(lm_lines(ev))
    assert "| w2s naive | 0.500 | 1.000 | +0.500 [" in text
    assert "| strong ceiling | 1.000 | 1.000 | +0.000 [+0.000, +0.000] | within noise |" in text
    assert "weak a" not in text and lm_lines({"row_correct": {"w2s naive": "10"}}) == []
