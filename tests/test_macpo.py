"""MACPO's pair construction with scripted scores (pipelines/macpo.py): chosen from the other
agents by the learner's lowest perplexity, rejected from the learner's own negative agent."""

import math
from pathlib import Path

import pytest

from pipelines.macpo import contrastive_pairs, perplexity


def scripted(table: dict[str, tuple[float, int]], calls: list):
    def fn(prompts, continuations):
        calls.append(list(continuations))
        return [table[c] for c in continuations]
    return fn


def test_perplexity_by_hand():
    assert perplexity(-6.0, 3) == pytest.approx(math.exp(2.0))
    assert perplexity(0.0, 0) == math.inf


def test_chosen_is_the_other_agents_answer_of_lowest_perplexity():
    positives = {"teacher_a": ["a1", "a2"], "teacher_b": ["b1", "b2"], "student": ["s1", "s2"]}
    # per-token log-likelihoods under the student (the learner): a1 -1.0, b1 -0.5 (lower PPL);
    # a2 -0.2 (lower PPL), b2 -2.0; the student's own s1 / s2 would win but are not candidates
    table = {"a1": (-3.0, 3), "b1": (-1.0, 2), "a2": (-0.4, 2), "b2": (-8.0, 4)}
    calls: list = []
    pairs = contrastive_pairs("student", ["x1", "x2"], positives, ["neg1", "neg2"], scripted(table, calls))
    assert [(p["chosen"], p["rejected"], p["chosen_from"]) for p in pairs] == [
        ("b1", "neg1", "teacher_b"), ("a2", "neg2", "teacher_a")]
    assert pairs[0]["chosen_ppl"] == pytest.approx(math.exp(0.5))
    assert calls == [["a1", "b1", "a2", "b2"]]  # one batched call, the learner's own answers left out


def test_a_teacher_learns_from_the_student_and_the_other_teacher():
    positives = {"teacher_a": ["a1"], "teacher_b": ["b1"], "student": ["s1"]}
    table = {"b1": (-4.0, 2), "s1": (-1.0, 2)}
    calls: list = []
    pairs = contrastive_pairs("teacher_a", ["x"], positives, ["na"], scripted(table, calls))
    assert pairs[0]["chosen"] == "s1" and pairs[0]["rejected"] == "na" and calls == [["b1", "s1"]]


def test_equal_or_empty_answers_give_no_pair_and_ties_keep_the_first_agent():
    positives = {"a": ["same", "t", ""], "b": ["x", "t2", ""]}
    table = {"same": (-1.0, 1), "x": (-5.0, 1), "t": (-2.0, 2), "t2": (-1.0, 1)}
    pairs = contrastive_pairs("learner", ["p1", "p2", "p3"], positives, ["same", "neg", "neg"], scripted(table, []))
    # p1: chosen "same" equals the rejected answer; p2: a tie in PPL (e^1), agent a first; p3: no candidate
    assert [(p["prompt"], p["chosen"]) for p in pairs] == [("p2", "t")]
    with pytest.raises(ValueError, match="no positive agent besides"):
        contrastive_pairs("a", ["p"], {"a": ["x"]}, ["n"], scripted({}, []))
    with pytest.raises(ValueError, match="one answer per prompt"):
        contrastive_pairs("a", ["p", "q"], {"a": ["x", "y"], "b": ["z"]}, ["n", "m"], scripted({}, []))


def test_deception_score_on_a_hand_made_table():
    from pipelines.deception import deception_score

    # rows:            0     1     2     3     4     5
    no_conflict = [0.9, 0.6, 0.5, 0.8, 0.2, 0.7]   # right on 0, 1, 2, 3, 5
    conflict = [0.1, 0.4, 0.3, 0.9, 0.1, 0.49]     # wrong on 0, 1, 2, 4, 5 -> flipped: 0, 1, 2, 5
    strong_knows = [1, 1, 0, 1, 1, 1]
    weak_unknown = [1, 0, 1, 1, 1, 1]
    # flipped and in S_k ∩ W_uk: rows 0 and 5 -> 2 / 4
    assert deception_score(no_conflict, conflict, strong_knows, weak_unknown) == 0.5
    assert deception_score([0.4], [0.1], [1], [1]) is None  # nothing turned from right to wrong
    with pytest.raises(ValueError, match="one value per row"):
        deception_score([0.9], [0.1, 0.2], [1], [1])


def test_sequence_aux_conf_loss_by_hand():
    import torch

    from pipelines.macpo import sequence_aux_conf_loss

    # one row, 2 target positions over a vocabulary of 3; the weak answer's tokens are [2, 1]
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]])
    batch = {"input_ids": torch.tensor([[5, 2, 1]]), "cont_mask": torch.tensor([[True, True]])}
    logp = logits.log_softmax(-1)[0]
    ce_weak = -(logp[0, 2] + logp[1, 1]) / 2
    ce_own = -(logp[0, 0] + logp[1, 2]) / 2  # the model's own argmax: [0, 2]

    class Ctx:
        gamma = 0.25

    loss, extra = sequence_aux_conf_loss(logits, batch, Ctx())
    assert loss.item() == pytest.approx((0.75 * ce_weak + 0.25 * ce_own).item(), abs=1e-6)
    assert extra == {"gamma": 0.25}


def test_sft_examples_take_the_good_or_bad_solution_or_every_answer():
    from pipelines.macpo import _examples

    rows = [{"id": "a", "prompt": "Goal: g", "options": ["s0", "s1"], "label": 1}]
    good = _examples(rows, None, "{prompt}\nSolution:", "good")
    bad = _examples(rows, None, "{prompt}\nSolution:", "bad")
    assert [(e["text"], e["response"]) for e in good] == [("Goal: g\nSolution:", " s1")]
    assert [e["response"] for e in bad] == [" s0"]
    both = _examples(rows, {"t1": ["x"], "t2": [" y "]}, "{prompt}", "")
    assert [e["response"] for e in both] == [" x", " y"] and len({e["id"] for e in both}) == 2
    # after a newline-ended prompt the answer starts at once (no space: it taught empty answers)
    assert [e["response"] for e in _examples(rows, {"t1": ["x"]}, "{prompt}\nSolution:\n", "")] == ["x"]


@pytest.fixture(scope="module")
def macpo_run(ray_cluster, tmp_path_factory):
    from conftest import tiny_run_config
    from pipelines.run import run

    cfg = tiny_run_config(tmp_path_factory.mktemp("macpo") / "run", "tiny_macpo")
    logs: list[str] = []
    return cfg, run(cfg, logs.append), logs


def test_macpo_run_initialises_iterates_and_judges(macpo_run):
    import json

    import pyarrow.parquet as pq

    cfg, metrics, logs = macpo_run
    root = cfg.root / "macpo"
    init = json.loads((root / "init" / "models.json").read_text())
    assert set(init) == {"teacher_a_pos", "teacher_a_neg", "teacher_b_pos", "teacher_b_neg", "student_pos",
                         "student_neg", "conf_loss"}
    assert all(Path(p, "config.json").is_file() for p in init.values())
    for k in (1, 2):
        rows = pq.read_table(root / f"iter_{k}" / "answers" / "_shards").to_pylist()
        assert len(rows) == 6
        for r in rows:
            answers, pairs = json.loads(r["answers"]), json.loads(r["pairs"])
            for learner, p in pairs.items():
                if p is None:
                    continue
                # chosen from another learner's positive agent; rejected = the learner's own negative
                assert p["chosen_from"] != learner
                assert p["chosen"] == " " + answers[f"{p['chosen_from']}_pos"]
                assert p["rejected"] == " " + answers[f"{learner}_neg"]
    it = metrics["stages"]["macpo_iter"]["iterations"]
    models2 = json.loads((root / "iter_2" / "models.json").read_text())
    for learner in ("teacher_a", "teacher_b", "student"):
        if it[2][learner]["pairs"]:
            assert models2[f"{learner}_pos"].endswith(f"iter_2/{learner}/model")
    res = metrics["macpo"]
    assert set(res["matches"]) == {"macpo_iter1 vs naive_sft", "macpo_iter1 vs conf_loss",
                                   "macpo_iter2 vs naive_sft", "macpo_iter2 vs conf_loss"}
    for v in res["matches"].values():
        assert v["win"] + v["tie"] + v["lose"] == v["n"] == 4
    assert set(res["length"]) == set(res["matches"])
    rows = pq.read_table(root / "eval" / "_shards").to_pylist()
    ans = [json.loads(r["answers"]) for r in rows]
    for k, v in res["length"].items():  # recomputed from the stored answers and verdicts
        a, b = k.split(" vs ")
        p = [json.loads(r["p"])[k] for r in rows]
        assert v["mean_chars_a"] == pytest.approx(sum(len(x[a]) for x in ans) / len(ans))
        assert v["rows"] == sum(abs(q - 0.5) > cfg.macpo.tie_margin and len(x[a]) != len(x[b]) for q, x in zip(p, ans))
    report = (cfg.root / "report.md").read_text()
    assert "MACPO" in report and "Length and the judge" in report and (cfg.root / "macpo.png").is_file()


@pytest.mark.parametrize("override, key", [("macpo.temperature=-0.5", "macpo.temperature"),
                                           ("macpo.iterations=0", "macpo.iterations")])
def test_bad_macpo_config_names_the_key(tmp_path, override, key):
    from cluster.loader import load_config
    from pipelines.run import RunConfig

    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config(RunConfig, Path(__file__).parents[1] / "configs" / "tiny_macpo.yaml",
                    [f"run_dir={tmp_path}", override])


def test_length_bias_by_hand():
    from pipelines.align import length_bias

    a, b = ["long answer", "x", "same", "yy"], ["s", "much longer", "four", "zz"]
    p = [0.9, 0.2, 0.9, 0.52]  # longer a wins; longer b wins; equal lengths; a tie (margin 0.05)
    got = length_bias(a, b, p, 0.05)
    assert got["rows"] == 2 and got["longer_preferred"] == 1.0
    assert got["mean_chars_a"] == (11 + 1 + 4 + 2) / 4 and got["mean_chars_b"] == (1 + 11 + 4 + 2) / 4
    assert length_bias(a, b, [0.1, 0.9, 0.5, 0.5], 0.05)["longer_preferred"] == 0.0
    assert length_bias(["a"], ["b"], [0.9], 0.05)["longer_preferred"] is None
