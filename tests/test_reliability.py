"""Reliability formulas (seed 001 Eq. 2-5) against values worked out by hand."""

import math

import numpy as np
import pytest

from pipelines import reliability as rel
from pipelines.annotate import combine_row


def test_paper_example_eq2_eq3_eq4():
    # Section 4.1's example: A = {2%, 5%, 10%, 10%, 5%} -> options 0=2%, 1=5%, 2=10%
    answers = [0, 1, 2, 2, 1]
    p = rel.empirical_distribution(answers, 3)
    assert p.tolist() == [0.2, 0.4, 0.4]  # Eq. 2: p("10%"|x) = 2/5
    # Eq. 3: -(0.2 ln 0.2 + 2 * 0.4 ln 0.4) = 0.321888 + 0.733033
    assert rel.answer_entropy(p) == pytest.approx(1.0549202, abs=1e-6)
    # Eq. 4 with T = 0.2: exp(p/T) over the prediction set = e^1, e^2, e^2
    s = rel.reliability_scores(answers, 0.2)
    denom = math.e + 2 * math.e**2  # 2.718282 + 14.778112 = 17.496394
    assert s[0] == pytest.approx(math.e / denom) and s[0] == pytest.approx(0.1553624, abs=1e-6)
    assert s[2] == pytest.approx(0.4223188, abs=1e-6)
    assert s[1] == s[4] == s[2] == s[3]


def test_entropy_extremes_and_unseen_options():
    assert rel.answer_entropy(rel.empirical_distribution([3, 3, 3, 3], 4)) == 0.0
    # every answer different: maximum entropy ln N
    assert rel.answer_entropy(rel.empirical_distribution([0, 1, 2, 3], 4)) == pytest.approx(math.log(4))
    # the softmax of Eq. 4 runs over the prediction set only: a single distinct answer -> 1.0
    assert rel.reliability_scores([2, 2, 2], 0.2).tolist() == [1.0, 1.0, 1.0]
    # two answers split 1:1 -> exp(0.5/0.2) each -> 0.5
    assert rel.reliability_scores([0, 1], 0.2).tolist() == [0.5, 0.5]


def test_eq5_reweighted_loss():
    # L_rew = (1/N) sum_i S_i L_i = (0.7*2.0 + 0.3*1.0) / 2 = 0.85
    assert rel.reweighted_loss([2.0, 1.0], [0.7, 0.3]) == pytest.approx(0.85)


def test_permutations():
    assert rel.option_permutations(2, 0, "x") == [(0, 1), (1, 0)]
    assert len(rel.option_permutations(4, 0, "x")) == 24
    five = rel.option_permutations(4, 5, "row-7")
    assert len(five) == len(set(five)) == 5 and five[0] == (0, 1, 2, 3)
    assert five == rel.option_permutations(4, 5, "row-7")  # deterministic per row id
    assert rel.option_permutations(3, 100, "x") == rel.option_permutations(3, 0, "x")  # capped at K!


def test_threshold_and_filter():
    ent = [0.0, 0.1, 0.5, 0.9]
    assert rel.uncertainty_threshold(ent, 50) == pytest.approx(0.3)  # median of 0.1 and 0.5
    assert rel.uncertainty_filter(ent, 50).tolist() == [True, True, False, False]
    # ties: literal rule keeps all rows at tau ...
    tied = [0.0, 0.693, 0.693, 0.693]
    assert rel.uncertainty_filter(tied, 50).tolist() == [True, True, True, True]
    # ... the soft tie-break keeps exactly half: lowest S_ent, then lowest soft entropy
    soft = [0.5, 0.6, 0.2, 0.4]
    assert rel.uncertainty_filter(tied, 50, soft).tolist() == [True, False, True, False]
    # where S_ent has no ties both rules agree
    assert rel.uncertainty_filter(ent, 50, [9, 9, 9, 9]).tolist() == [True, True, False, False]


def test_soft_tie_break_keeps_what_the_paper_rule_keeps_on_distinct_values():
    # n = 5 distinct: the median is the 3rd value, S_ent <= tau keeps 3 (round(2.5) would give 2)
    five = [0.4, 0.1, 0.3, 0.0, 0.2]
    assert rel.uncertainty_filter(five, 50).tolist() == [False, True, False, True, True]
    assert rel.uncertainty_filter(five, 50, [0.0] * 5).tolist() == [False, True, False, True, True]
    assert rel.uncertainty_filter([0.7], 50, [0.0]).tolist() == [True]  # n = 1 keeps its row
    rng = np.random.default_rng(0)
    for n in range(1, 40):
        for pct in (10.0, 25.0, 50.0, 75.0, 100.0):
            e = rng.permutation(n) / n  # distinct values
            assert (rel.uncertainty_filter(e, pct, rng.random(n)) == rel.uncertainty_filter(e, pct)).all(), (n, pct)


def test_combine_row_maps_orders_back():
    # one model, K = 2, orders (0,1) and (1,0). Order 1 shows [opt0, opt1]: P(pos)=[0.8, 0.2] -> answer 0.
    # Order 2 shows [opt1, opt0]: P(pos)=[0.9, 0.1] -> shown position 0 is option 1 -> answer 1.
    per_model = [[np.array([0.8, 0.2]), np.array([0.9, 0.1])]]
    c = combine_row(per_model, [(0, 1), (1, 0)], [1.0], "reliability", 0.2)
    assert c["answers"] == [0, 1]
    # per-option probability averaged over orders: opt0 (0.8 + 0.1)/2, opt1 (0.2 + 0.9)/2
    assert c["probs"][0].tolist() == pytest.approx([0.45, 0.55])
    assert c["emp_probs"] == [0.5, 0.5] and c["entropy"] == pytest.approx(math.log(2))
    assert c["weak_label"] == 1  # tie in Eq. 2 broken by the soft vote (0.55 > 0.45)
    assert c["reliability"] == [0.5, 0.5]


def test_combine_row_weighted_ensemble():
    # two models, weights 0.75 / 0.25: soft = 0.75*[0.6,0.4] + 0.25*[0.1,0.9] = [0.475, 0.525]
    per_model = [[np.array([0.6, 0.4])], [np.array([0.1, 0.9])]]
    c = combine_row(per_model, [(0, 1)], [0.75, 0.25], "ensemble", 0.2)
    assert c["weak_probs"] == pytest.approx([0.475, 0.525])
    assert c["weak_label"] == 1 and c["weak_conf"] == pytest.approx(0.525)
    assert c["answers"] == [0, 1]
