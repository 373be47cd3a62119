"""MACPO's pair construction with scripted scores (pipelines/macpo.py): chosen from the other
agents by the learner's lowest perplexity, rejected from the learner's own negative agent."""

import math

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
