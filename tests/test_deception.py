"""Seed 002's deception setting (pipelines/methods/conflict.py): the explicit conflict loss by hand,
the implicit conflict's extra data, the report's Deception Score, and a tiny run that trains the
no-conflict and conflict models with and without bootstrapping on Ray Train."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cluster.loader import load_config
from pipelines.run import RunConfig
from training.losses import explicit_conflict_loss

TINY = "configs/tiny_deception.yaml"


def test_explicit_conflict_loss_by_hand():
    # row 0: M = p(truth 0) = 0.3 < 0.5 -> the term is on; row 1: M = 0.8 -> off
    logp = torch.tensor([[0.3, 0.7], [0.8, 0.2]]).log()
    weak, truth = torch.tensor([1, 0]), torch.tensor([0, 0])
    loss = explicit_conflict_loss(logp, weak, truth, alpha=0.5)
    ce = (-math.log(0.7) - math.log(0.8)) / 2
    conflict = (-math.log(1 - 0.3) + 0.0) / 2
    assert loss.item() == pytest.approx(ce + 0.5 * conflict, abs=1e-6)
    assert explicit_conflict_loss(logp, weak, truth, alpha=0.0).item() == pytest.approx(ce, abs=1e-6)
    # gradients on the logits: the conflict adds alpha / B * M(x) to row 0's true-option logit
    # (d/dz0 of -log(1 - softmax(z)_0) = p_0), pushing it down; row 1's term is off
    def grad(alpha):
        z = torch.tensor([[0.3, 0.7], [0.8, 0.2]]).log().requires_grad_(True)
        explicit_conflict_loss(z.log_softmax(1), weak, truth, alpha).backward()
        return z.grad
    diff = grad(0.5) - grad(0.0)
    assert diff[0, 0].item() == pytest.approx(0.5 / 2 * 0.3, abs=1e-6)
    assert diff[1].abs().max().item() == pytest.approx(0.0, abs=1e-7)


def test_other_label_is_the_unique_longest_option():
    from pipelines.methods.conflict import other_label

    assert other_label(["a", "bbb", "cc"]) == 1
    assert other_label(["aa", "bb", "c"]) is None  # a tie has no answer of the other objective


def _cfg(tmp_path, *extra):
    return load_config(RunConfig, TINY, [f"run_dir={tmp_path}", *extra])


def test_conflict_rows_are_unused_and_labelled_by_the_rule(tmp_path):
    from pipelines.data import SPLITS, prepare_data, read_split
    from pipelines.methods.conflict import conflict_rows, other_label

    cfg = _cfg(tmp_path, "strong.conflict.rows=30")
    prepare_data(cfg.data, cfg.root / "data", log=lambda m: None)
    rows = conflict_rows(cfg)
    used = {r["id"] for s in SPLITS for r in read_split(cfg.root / "data" / s)}
    assert len(rows) == 30 and len({r["id"] for r in rows}) == 30 and not used & {r["id"] for r in rows}
    assert all(r["label"] == other_label(r["options"]) is not None for r in rows)
    assert conflict_rows(cfg) == rows  # seeded: the same rows every time (the job fingerprint holds)
    too_many = _cfg(tmp_path, "strong.conflict.rows=100000")
    with pytest.raises(ValueError, match=r"strong\.conflict\.rows"):
        conflict_rows(too_many)


@pytest.mark.parametrize("override, key", [
    ("strong.conflict.rows=0", "strong.conflict.rows"),
    ("strong.conflict.rule=shortest", "strong.conflict.rule"),
    ("strong.train.conflict_alpha=-1", "strong.train.conflict_alpha"),
    ("strong.bootstrap_methods=[nope]", "strong.bootstrap_methods"),
])
def test_bad_conflict_config_names_the_key(tmp_path, override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        _cfg(tmp_path, override)


def _hand_made_metrics():
    # rows:          0    1    2    3    4    5
    ceiling = "111101"
    weak = "010001"  # W_uk: rows 0, 2, 3, 4
    naive = "111110"  # no-conflict model right on 0-4
    explicit = "010101"  # flipped: 0, 2, 4 -> in S_k ∩ W_uk: 0, 2 (row 4: the ceiling is wrong) -> 2 / 3
    return {"evaluation": {
        "ceiling": "strong ceiling", "supervisor": "weak ensemble", "row_ids": [f"r{i}" for i in range(6)],
        "row_correct": {"strong ceiling": ceiling, "weak ensemble": weak, "w2s naive": naive,
                        "w2s conflict_explicit": explicit},
        "row_pred": {"w2s naive": [0, 0, 0, 0, 0, 1], "w2s conflict_explicit": [1, 0, 1, 0, 1, 1]}}}


def test_report_computes_the_deception_score(tmp_path):
    from pipelines.data import write_split
    from pipelines.methods.conflict import report

    # test rows: label 0 everywhere; the longest option is 1 on rows 0-4, row 5 has a tie
    test = [{"id": f"r{i}", "prompt": "q", "options": ["a", "bb"] if i < 5 else ["a", "b"], "label": 0}
            for i in range(6)]
    write_split(test, tmp_path / "data" / "test", shard_rows=8)
    text = "\n".join(report(tmp_path, _hand_made_metrics()))
    row = next(line for line in text.splitlines() if line.startswith("| direct | w2s naive | w2s conflict_explicit"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "-0.333" and cells[4] == "3" and cells[5] == "2" and cells[6].startswith("0.667 [")
    assert cells[7] == "0.600"  # random flips: S_k ∩ W_uk = {0, 2, 3} among the 5 rows naive gets right
    assert "bootstrapped" not in text  # no bootstrapped pair was evaluated
    # the premise: naive right on 5 of 6 rows, the weak ensemble on 2 of 6
    assert "Premise: w2s naive - weak ensemble = +0.500 [" in text
    # picks of the longest option on the 5 rows that have one: naive 0 / 5, explicit 3 / 5
    assert "| w2s naive | 0.000 |" in text and "| w2s conflict_explicit | 0.600 |" in text


def test_report_without_a_no_conflict_model_says_so(tmp_path):
    from pipelines.methods.conflict import report

    m = _hand_made_metrics()
    del m["evaluation"]["row_correct"]["w2s naive"]
    assert "No (no-conflict, conflict) pair" in "\n".join(report(tmp_path, m))


def test_deception_run_tiny(tmp_path, ray_cluster):
    """The tiny profile end to end: no-conflict, explicit and implicit conflict models, the
    bootstrapped naive and explicit chains, and the report's Deception Score table."""
    from pipelines.run import run

    cfg = _cfg(tmp_path)
    metrics = run(cfg, log=lambda m: None)
    w2s = metrics["stages"]["strong_w2s"]
    held_out = metrics["data"]["counts"]["held_out"]
    assert w2s["naive"]["examples"] == w2s["conflict_explicit"]["examples"] == held_out
    assert w2s["conflict_implicit"]["examples"] == held_out + cfg.strong.conflict.rows  # D_weak + D_conflict
    # the explicit term changes the first loss on the same examples and seed (the model starts
    # wrong on most rows, where alpha * -log(1 - M) is added)
    assert w2s["conflict_explicit"]["first_loss"] > w2s["naive"]["first_loss"] + 1e-4
    assert (tmp_path / "strong_w2s" / "bootstrap_conflict_explicit" / "model").is_dir()
    assert (tmp_path / "bootstrap_conflict_explicit" / "step1" / "labels").is_dir()
    acc = metrics["evaluation"]["accuracy"]
    assert {"w2s naive", "w2s conflict_explicit", "w2s conflict_implicit", "w2s bootstrap",
            "w2s bootstrap conflict_explicit"} <= set(acc)
    report = (tmp_path / "report.md").read_text()
    assert "## Weak-to-strong deception" in report
    for setting, nc, c in (("direct", "w2s naive", "w2s conflict_explicit"),
                           ("direct", "w2s naive", "w2s conflict_implicit"),
                           ("bootstrapped", "w2s bootstrap", "w2s bootstrap conflict_explicit")):
        assert f"| {setting} | {nc} | {c} |" in report
    ev = metrics["evaluation"]
    assert len(ev["row_pred"]["w2s naive"]) == ev["rows"] and np.isin(ev["row_pred"]["w2s naive"], range(4)).all()


def test_conflict_alpha_at_its_default_leaves_old_fingerprints_unchanged():
    """A run_dir trained before strong.train.conflict_alpha existed is still recognised."""
    from dataclasses import asdict, replace

    from pipelines.train_stages import _fingerprint
    from training.launcher import fingerprint
    from training.sft_config import TrainConfig
    from training.sft_trainer import TrainJob

    job = TrainJob(name="j", spec="tiny:llama:7", out_dir="/tmp/x", train=TrainConfig(), examples=[{"id": "a"}])
    old = asdict(job.train)
    del old["conflict_alpha"]  # what the fingerprint held before the field existed
    before = fingerprint({"spec": job.spec, "train": old, "method": job.method, "weights": job.weak_weights,
                          "chat": job.chat, "examples": job.examples})
    assert _fingerprint(job) == before
    assert _fingerprint(replace(job, train=TrainConfig(conflict_alpha=2.0))) != before
