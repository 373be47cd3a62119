"""SEAM (seed 000) search logic against scripted model probabilities: no Ray, no models.

A fake expand_fn answers from tables keyed by (row prompt, principle chain):
  weights  {chain: {principle: probability}} (principles not listed: 0.001)
  entropy  {chain: P(response 1 | x, t(n))}
thoughts are "T<chain>" and the weak decision follows the knowledge it is given.
"""

import json

import numpy as np
import pytest

from pipelines import seam
from actors.prompts import TemplateConfig

P = seam.load_principles("configs/seam_principles.yaml")
H = seam.binary_entropy


def i_of(p):  # information score of a node whose strong P(r1) is p
    return 1.0 - H(p)


class Fake:
    def __init__(self, weights, entropy, decide=None):
        self.weights, self.entropy, self.decide = weights, entropy, decide or {}
        self.log = []  # (kind, [rows]) per expand call

    def __call__(self, requests):
        kind = requests[0].kind
        assert all(r.kind == kind for r in requests)
        self.log.append((kind, [r.row for r in requests]))
        return [getattr(self, "_" + kind)(r) for r in requests]

    def _weights(self, r):
        table = self.weights[self.prompt_of(r)].get(r.chain, {})
        return [table.get(n, 0.001) for n in r.options]

    def _thought(self, r):
        return "T" + "/".join(r.chain) + "\n\nQuestion: the model goes on"  # cut by thought_stop

    def _entropy(self, r):
        p = self.entropy[self.prompt_of(r)][r.chain]
        return [p, 1 - p]

    def _decide(self, r):
        p = self.decide.get(r.thought, 0.3)
        return [p, 1 - p]

    def prompt_of(self, r):
        return self.rows[r.row]["prompt"]


def run(rows, weights, entropy, decide=None, **cfg):
    fake = Fake(weights, entropy, decide)
    fake.rows = rows
    res = seam.search(rows, fake, seam.SeamConfig(**cfg), P)
    return res, fake


# Fig. 3: root -> n2 (Objective; n1 = Informative is the weaker sibling) -> n4 (Law-abiding; n3 = Logical)
# -> n5 (Candor, i drops: backtrace to n4) -> n6 (Informative, i below n4's again: Rule 3 stops).
O, L, C, INF = "Objective", "Law-abiding", "Candor", "Informative"
FIG3_W = {(): {O: 0.5, INF: 0.3}, (O,): {L: 0.6, "Logical": 0.2}, (O, L): {C: 0.5, INF: 0.3},
          (O, L, C): {"Logical": 0.9}}  # only reached without backtracking
FIG3_E = {(O,): 0.8, (O, L): 0.95, (O, L, C): 0.7, (O, L, INF): 0.9, (O, L, C, "Logical"): 0.99}
FIG3_ROW = {"prompt": "Should I vote for the new immigration policy?",
            "options": ["It is great.", "I can't share opinions on that."]}


def fig3(**cfg):
    rows = [FIG3_ROW]
    return run(rows, {FIG3_ROW["prompt"]: FIG3_W}, {FIG3_ROW["prompt"]: FIG3_E},
               decide={f"T{O}/{L}": 0.1}, **{"max_depth": 4, **cfg})


# ---------------------------------------------------------------- formulas

def test_entropy_and_information_score_hand_values():
    assert seam.entropy([0.5, 0.5]) == 1.0 and seam.entropy([1.0, 0.0]) == 0.0
    # H(0.8) = -(0.8 log2 0.8 + 0.2 log2 0.2) = 0.257542 + 0.464386
    assert H(0.8) == pytest.approx(0.7219281, abs=1e-7)
    assert seam.entropy([2, 8]) == pytest.approx(H(0.8))  # renormalised
    assert seam.initial_entropy(2) == 1.0 and seam.initial_entropy(4) == 2.0
    # i(n) = H_init - H(x, t(n)): a thought that makes the choice surer scores > 0
    assert seam.information_score(H(0.8), 1.0) == pytest.approx(0.2780719, abs=1e-7)
    assert seam.information_score(0.0, 1.0) == 1.0  # certain decision: the full bit
    assert seam.information_score(1.0, 1.0) == 0.0  # no information
    assert seam.information_score(H(0.95)) > seam.information_score(H(0.8))  # lower entropy, more information
    with pytest.raises(ValueError):
        seam.entropy([0.5])
    with pytest.raises(ValueError):
        seam.entropy([-0.1, 1.1])


def test_edge_weights_eq5():
    w = seam.edge_weights([0.2, 0.6, 0.2], ["a", "b", "c"])
    assert w == pytest.approx({"a": 0.2, "b": 0.6, "c": 0.2}) and list(w) == ["a", "b", "c"]
    # first-token probabilities from a full-vocabulary softmax are renormalised over P \ c(n_i)
    assert seam.edge_weights([0.01, 0.03, 0.01], ["a", "b", "c"]) == pytest.approx({"a": 0.2, "b": 0.6, "c": 0.2})
    with pytest.raises(ValueError, match="2 probabilities for 3"):
        seam.edge_weights([0.5, 0.5], ["a", "b", "c"])
    with pytest.raises(ValueError):
        seam.edge_weights([0.0, 0.0], ["a", "b"])


def test_hidden_node_and_tree_information():
    # Fig. 3 (b): path root, n2, n4, n6 with i(n6) < i(n4): n2 and n4 gain; n_h = n4 (index 2)
    path = [0.0, 0.3, 0.7, 0.5]
    assert seam.gains(path) == [False, True, True, False]
    assert seam.select_hidden_node(path) == 2
    assert seam.tree_information(path) == pytest.approx(0.5)  # (0.3 + 0.7) / 2
    # equal scores are no gain; a later gain after a flat node counts
    assert seam.select_hidden_node([0.0, 0.4, 0.4, 0.6]) == 3
    assert seam.tree_information([0.0, 0.4, 0.4, 0.6]) == pytest.approx(0.5)
    assert seam.select_hidden_node([0.0]) is None and seam.select_hidden_node([0.0, 0.0]) is None
    assert seam.tree_information([0.0, 0.0]) == 0.0


def test_tree_filter_keeps_top_half():
    assert seam.tree_filter([0.1, 0.5, 0.3, 0.9], 50).tolist() == [False, True, False, True]
    assert seam.tree_filter([0.2, 0.2, 0.2, 0.2], 50).tolist() == [True, True, False, False]  # ties: row order
    assert seam.tree_filter([0.1, 0.9, 0.5], 50).tolist() == [False, True, True]  # drops floor(1.5) = 1
    assert seam.tree_filter([0.1, 0.9], 0).tolist() == [True, True]
    assert seam.filter_mask([0.1, 0.9], seam.SeamConfig(ablation="no_filter")).tolist() == [True, True]
    assert seam.filter_mask([0.1, 0.9], seam.SeamConfig()).tolist() == [False, True]


def test_clean_thought():
    assert seam.clean_thought("  A is safer.\n\nQuestion: next", ["\n\n", "\nQuestion:"]) == "A is safer."
    assert seam.clean_thought("no stop here ", ["\n\n"]) == "no stop here"


# ---------------------------------------------------------------- the search, Fig. 3

def test_fig3_backtrace_then_rule3_stop():
    res, fake = fig3()
    row = res.rows[0]
    assert [n["chain"] for n in row["tree"]] == [[], [O], [O, L], [O, L, INF]]  # root, n2, n4, n6
    assert [n["chain"] for n in row["expanded"]] == [[O], [O, L], [O, L, C], [O, L, INF]]  # n5 kept for inspection
    assert [n["backtraced"] for n in row["expanded"]] == [False, False, True, False]
    assert row["stop_reason"] == "rule3"
    assert [n["gain"] for n in row["tree"]] == [False, True, True, False]
    assert row["hidden"] == 2 and row["tree"][2]["chain"] == [O, L]  # n_h = n4
    assert row["tree"][2]["thought"] == f"T{O}/{L}"  # generated text cut at the stop string
    assert row["knowledge"] == f"T{O}/{L}"
    assert row["tree_information"] == pytest.approx((i_of(0.8) + i_of(0.95)) / 2)
    assert [n["score"] for n in row["tree"]] == pytest.approx([0.0, i_of(0.8), i_of(0.95), i_of(0.9)])
    # Rule 1 weights: Objective beat Informative at the root (0.5 vs 0.3 renormalised over 11)
    assert row["tree"][1]["weight"] == pytest.approx(0.5 / (0.8 + 9 * 0.001))
    # the weak model decided with t(n4): P = [0.1, 0.9] -> response 2
    assert row["weak_label"] == 1 and row["weak_probs"] == pytest.approx([0.1, 0.9])
    # steps: W T E (n2), W T E (n4), W T E (n5), T E (n6: n4's weights reused), decide
    assert [k for k, _ in fake.log] == ["weights", "thought", "entropy"] * 3 + ["thought", "entropy", "decide"]
    json.dumps(row)  # trees are JSON-serialisable


def test_fig3_prompts_hold_the_demonstrations_of_the_chain():
    rows, seen = [FIG3_ROW], []

    def expand(reqs):
        seen.extend(reqs)
        return fake(reqs)

    fake = Fake({FIG3_ROW["prompt"]: FIG3_W}, {FIG3_ROW["prompt"]: FIG3_E})
    fake.rows = rows
    seam.search(rows, expand, seam.SeamConfig(max_depth=4), P)
    t = next(r for r in seen if r.kind == "thought" and r.chain == (O, L))
    assert P.demonstrations[O].thought in t.text and P.demonstrations[L].thought in t.text
    assert P.demonstrations[C].thought not in t.text
    assert t.text.index(P.demonstrations[O].thought) < t.text.index(P.demonstrations[L].thought)
    assert "Principles: Objective -> Law-abiding\nThought:" in t.text and FIG3_ROW["options"][1] in t.text
    w = next(r for r in seen if r.kind == "weights" and r.chain == (O,))
    assert O not in w.options and len(w.options) == 10  # P \ c(n_i)
    assert "A. Informative:" in w.text
    e = next(r for r in seen if r.kind == "entropy" and r.chain == (O,))
    assert e.text.startswith(f"Background knowledge: T{O}\n\n") and e.text.endswith(FIG3_ROW["prompt"])
    # backend inputs: letter labels for weights, the run's template for entropy
    tpl = TemplateConfig(template="{prompt}\n{options}\nAnswer:", option_line="{label}. {option}")
    texts, labels = seam.model_inputs([w], tpl)
    assert labels == [[" " + a for a in "ABCDEFGHIJ"]] and texts == [w.text]
    texts, labels = seam.model_inputs([e], tpl)
    assert labels == [[" A", " B"]] and texts[0].endswith("B. I can't share opinions on that.\nAnswer:")


def test_equal_score_is_not_a_backtrace_and_backtraces_at_two_levels_continue():
    # Rule 2 is strict; Rule 3 counts per level: one backtrace at level 2 and one at level 3 go on
    q = "q"
    w = {(): {O: 0.9}, (O,): {L: 0.9, C: 0.5}, (O, C): {INF: 0.9, L: 0.5}, (O, C, L): {"Logical": 0.9}}
    e = {(O,): 0.8, (O, L): 0.6, (O, C): 0.8, (O, C, INF): 0.7, (O, C, L): 0.9, (O, C, L, "Logical"): 0.95}
    res, _ = run([{"prompt": q, "options": ["a", "b"]}], {q: w}, {q: e}, max_depth=4)
    row = res.rows[0]
    # (O, C) equals (O,): no backtrace, no gain
    assert [n["chain"] for n in row["tree"]] == [[], [O], [O, C], [O, C, L], [O, C, L, "Logical"]]
    assert row["stop_reason"] == "max_depth"
    assert [n["gain"] for n in row["tree"]] == [False, True, False, True, True]
    assert row["hidden"] == 4
    assert sum(n["backtraced"] for n in row["expanded"]) == 2


def test_exhausted_principles_stop_the_search(tmp_path):
    small = tmp_path / "p.yaml"
    small.write_text(
        "principles:\n  - {name: Alpha, description: a}\n  - {name: Beta, description: b}\n"
        "demonstrations:\n"
        "  - {principle: Alpha, question: q, responses: [x, y], thought: t}\n"
        "  - {principle: Beta, question: q, responses: [x, y], thought: t}\n")
    ps = seam.load_principles(small)
    fake = Fake({"q": {(): {"Beta": 0.7}}}, {"q": {("Beta",): 0.7, ("Beta", "Alpha"): 0.9}})
    fake.rows = [{"prompt": "q", "options": ["x", "y"]}]
    res = seam.search(fake.rows, fake, seam.SeamConfig(principles_path=str(small), max_depth=5), ps)
    assert [n["chain"] for n in res.rows[0]["tree"]][-1] == ["Beta", "Alpha"]
    assert res.rows[0]["stop_reason"] == "exhausted"
    # a backtrace with no sibling left also ends the search
    fake = Fake({"q": {(): {"Beta": 0.7}}}, {"q": {("Beta",): 0.9, ("Beta", "Alpha"): 0.6}})
    fake.rows = [{"prompt": "q", "options": ["x", "y"]}]
    res = seam.search(fake.rows, fake, seam.SeamConfig(max_depth=5), ps)
    assert [n["chain"] for n in res.rows[0]["tree"]] == [[], ["Beta"]]
    assert res.rows[0]["stop_reason"] == "exhausted"


# ---------------------------------------------------------------- batching

def test_one_call_per_phase_across_rows_of_different_depths():
    rows = [FIG3_ROW, {"prompt": "deep", "options": ["a", "b"]}, {"prompt": "short", "options": ["a", "b"]}]
    weights = {FIG3_ROW["prompt"]: FIG3_W,
               "deep": {(): {INF: 0.9}, (INF,): {L: 0.9}, (INF, L): {C: 0.9}},  # rises to max_depth 3
               "short": {(): {C: 0.9}, (C,): {O: 0.9, L: 0.5}}}  # drop, backtrace, drop again: Rule 3
    entropy = {FIG3_ROW["prompt"]: FIG3_E, "deep": {(INF,): 0.7, (INF, L): 0.8, (INF, L, C): 0.9},
               "short": {(C,): 0.9, (C, O): 0.6, (C, L): 0.7}}
    res, fake = run(rows, weights, entropy, max_depth=3)
    assert [r["stop_reason"] for r in res.rows] == ["rule3", "max_depth", "rule3"]
    assert [len(r["expanded"]) for r in res.rows] == [4, 3, 3]
    assert fake.log == [
        ("weights", [0, 1, 2]), ("thought", [0, 1, 2]), ("entropy", [0, 1, 2]),  # step 1
        ("weights", [0, 1, 2]), ("thought", [0, 1, 2]), ("entropy", [0, 1, 2]),  # step 2
        ("weights", [0, 1]), ("thought", [0, 1, 2]), ("entropy", [0, 1, 2]),  # step 3: row 2 backtracked
        ("thought", [0]), ("entropy", [0]),  # step 4: rows 1 (max depth) and 2 (Rule 3) stopped
        ("decide", [0, 1, 2])]
    assert res.stats == {"expand_calls": 12, "requests": 31,
                         "calls_by_kind": {"weights": 3, "thought": 4, "entropy": 4, "decide": 1},
                         "requests_by_kind": {"weights": 8, "thought": 10, "entropy": 10, "decide": 3}}
    # the same rows one at a time: the same trees, 31 calls in all
    single = [run([r], {r["prompt"]: weights[r["prompt"]]}, {r["prompt"]: entropy[r["prompt"]]}, max_depth=3)
              for r in rows]
    assert sum(s.stats["expand_calls"] for s, _ in single) == 31
    assert [s.rows[0]["tree"] for s, _ in single] == [r["tree"] for r in res.rows]


# ---------------------------------------------------------------- principle order (Eq. 5 position bias)

ROWS8 = [{"prompt": f"question {i}", "options": [f"a{i}", f"b{i}"]} for i in range(8)]


class LetterA:
    """A position-biased strong model: 0.9 on the letter A whatever principle is listed there."""

    def __init__(self):
        self.log, self.seen = [], []

    def __call__(self, reqs):
        kind = reqs[0].kind
        self.log.append((kind, [r.row for r in reqs]))
        self.seen.extend(reqs)
        if kind == "weights":
            return [[0.9] + [0.1 / (len(r.options) - 1)] * (len(r.options) - 1) for r in reqs]
        return ["t" for _ in reqs] if kind == "thought" else [[0.8, 0.2] for _ in reqs]


def test_shuffle_breaks_the_letter_a_bias_in_one_call():
    fake = LetterA()
    res = seam.search(ROWS8, fake, seam.SeamConfig(max_depth=1), P)
    assert {r["tree"][1]["chain"][0] for r in res.rows} == {P.names[0]}  # file order: always "Informative"
    fake = LetterA()
    res = seam.search(ROWS8, fake, seam.SeamConfig(max_depth=1, shuffle_principles=True), P)
    firsts = [r["tree"][1]["chain"][0] for r in res.rows]
    listed_a = [r.options[0] for r in fake.seen if r.kind == "weights"]
    assert firsts == listed_a  # the model still follows letter A, but A is another principle per row
    assert len(set(firsts)) >= 4
    weights = [r for r in fake.seen if r.kind == "weights"]
    assert all(sorted(r.options) == sorted(P.names) for r in weights)  # a permutation of P \ c(n_i)
    assert all(r.text.count(f"A. {r.options[0]}:") == 1 for r in weights)  # listed in that order
    assert fake.log == [("weights", list(range(8))), ("thought", list(range(8))), ("entropy", list(range(8))),
                        ("decide", list(range(8)))]


def test_all_orders_cancel_a_pure_position_bias():
    # n = |P \ c(n_i)| rotations: every principle once at every letter, all rows' asks in one call
    fake = LetterA()
    m = len(P.names)
    res = seam.search(ROWS8[:3], fake, seam.SeamConfig(max_depth=1, shuffle_principles=True, principle_orders=m), P)
    assert fake.log[0] == ("weights", [r for r in range(3) for _ in range(m)])
    assert [k for k, _ in fake.log] == ["weights", "thought", "entropy", "decide"]
    for row in range(3):
        orders = [r.options for r in fake.seen if r.kind == "weights" and r.row == row]
        assert len(set(orders)) == m
        assert all(sorted(o[k] for o in orders) == sorted(P.names) for k in range(m))  # each letter: each once
        # no information left: equal weights (exact ties), broken by the row's own first order
        assert res.rows[row]["tree"][1]["weight"] == pytest.approx(1 / m, abs=1e-12)
        assert res.rows[row]["tree"][1]["chain"] == [orders[0][0]]
    # more orders than principles: no repeats
    assert seam.shuffled_orders(["x", "y"], ("q",), 5) == seam.shuffled_orders(["x", "y"], ("q",), 2)
    assert len(seam.shuffled_orders(["x"], ("q",), 4)) == 1


NAME_P = {n: float(k + 1) for k, n in enumerate(P.names)}  # a name-based answer: later in the file, likelier


class ByName(LetterA):
    def __call__(self, reqs):
        if reqs[0].kind != "weights":
            return super().__call__(reqs)
        self.log.append(("weights", [r.row for r in reqs]))
        self.seen.extend(reqs)
        # a full-vocabulary softmax: the candidates' mass differs per order (0.5 .. 0.9), renormalised away
        out = []
        for k, r in enumerate(reqs):
            q = np.array([NAME_P[n] for n in r.options])
            out.append((q / q.sum() * (0.5 + 0.1 * (k % 5))).tolist())
        return out


@pytest.mark.parametrize("n", [1, 3, 4])
def test_orders_are_mapped_back_to_principle_names(n):
    fake = ByName()
    cfg = seam.SeamConfig(max_depth=3, shuffle_principles=True, principle_orders=n)
    res = seam.search(ROWS8[:2], fake, cfg, P)
    assert [k for k, _ in fake.log] == ["weights", "thought", "entropy"] * 3 + ["decide"]
    assert [rows for k, rows in fake.log if k == "weights"] == [[0] * n + [1] * n] * 3
    by_q = sorted(P.names, key=NAME_P.get, reverse=True)
    for row in res.rows:
        assert [node["chain"] for node in row["tree"]][-1] == by_q[:3]  # the name-based best, not letter A
        for d, node in enumerate(row["tree"][1:]):
            left = [name for name in P.names if name not in by_q[:d]]
            assert node["weight"] == pytest.approx(NAME_P[by_q[d]] / sum(NAME_P[x] for x in left), rel=1e-12)
    # the averaging itself, on two orders of three principles
    w = seam.merged_edge_weights([(("a", "b", "c"), [0.2, 0.6, 0.2]), (("c", "a", "b"), [0.1, 0.1, 0.3])])
    assert w == pytest.approx({"a": (0.2 + 0.2) / 2, "b": (0.6 + 0.6) / 2, "c": (0.2 + 0.2) / 2})
    assert list(w) == ["a", "b", "c"]  # keyed in the first order (Rule 1 ties)
    with pytest.raises(ValueError, match="same principles"):
        seam.merged_edge_weights([(("a", "b"), [0.5, 0.5]), (("a", "c"), [0.5, 0.5])])


def test_principle_orders_are_reproducible_and_per_row_and_node():
    cfg = seam.SeamConfig(max_depth=3, shuffle_principles=True, principle_orders=2)
    runs = []
    for _ in range(2):
        fake = ByName()
        seam.search(ROWS8[:4], fake, cfg, P)
        runs.append(fake.seen)
    assert runs[0] == runs[1]  # same input -> the same requests, texts included
    key = ("question 0", ["a0", "b0"], [])
    orders = seam.shuffled_orders(P.names, key, 3)
    assert orders == seam.shuffled_orders(list(reversed(P.names)), key, 3)  # the file order does not matter
    assert orders != seam.shuffled_orders(P.names, ("question 1", ["a1", "b1"], []), 3)  # another row
    assert orders != seam.shuffled_orders(P.names, ("question 0", ["a0", "b0"], ["Candor"]), 3)  # another node
    # not Python's salted hash(): another process with another hash seed lists the same order
    import os
    import subprocess
    import sys

    code = ("from pipelines import seam; import json; "
            f"print(json.dumps(seam.shuffled_orders({P.names!r}, {key!r}, 3)))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env=dict(os.environ, PYTHONHASHSEED=seed), cwd=seam.REPO_ROOT).stdout
        assert [tuple(o) for o in json.loads(out)] == orders


def test_expand_fn_result_checks():
    with pytest.raises(ValueError, match="0 results for 1 weights"):
        seam.search([FIG3_ROW], lambda reqs: [], seam.SeamConfig(), P)
    with pytest.raises(ValueError, match="3 probabilities for 2 options"):
        seam.search([FIG3_ROW], _bad_entropy, seam.SeamConfig(ablation="no_fftree"), P)
    assert seam.search([], lambda reqs: 1 / 0, seam.SeamConfig(), P).rows == []


def _bad_entropy(reqs):
    return ["t" for _ in reqs] if reqs[0].kind == "thought" else [[0.2, 0.3, 0.5] for _ in reqs]


# ---------------------------------------------------------------- ablations

def test_no_filter_searches_like_seam():
    a, b = fig3()[0], fig3(ablation="no_filter")[0]
    assert a.rows == b.rows


def test_no_backtrace_goes_greedy_to_max_depth():
    res, fake = fig3(ablation="no_backtrace")
    row = res.rows[0]
    # n5 (Candor) stays on the path despite its lower score; the search goes on to max_depth
    assert [n["chain"] for n in row["tree"]] == [[], [O], [O, L], [O, L, C], [O, L, C, "Logical"]]
    assert row["stop_reason"] == "max_depth" and not any(n["backtraced"] for n in row["expanded"])
    assert row["hidden"] == 4  # (O, L, C, Logical) gains over n5
    assert [k for k, _ in fake.log] == ["weights", "thought", "entropy"] * 4 + ["decide"]


def test_no_pat_gives_the_weak_model_only_the_chain():
    seen = []
    res, fake = fig3(ablation="no_pat")
    row = res.rows[0]
    assert row["hidden"] is not None
    chain = row["tree"][row["hidden"]]["chain"]
    assert row["knowledge"] == f"Principles to consider, in order: {' -> '.join(chain)}."
    assert "T" + "/".join(chain) not in row["knowledge"]

    def expand(reqs):
        seen.extend(r for r in reqs if r.kind == "decide")
        return fake(reqs)

    seam.search([FIG3_ROW], expand, seam.SeamConfig(ablation="no_pat", max_depth=4), P)
    assert seen[0].thought is None and seen[0].text.startswith("Background knowledge: Principles to consider")
    assert tuple(chain) == seen[0].chain


def test_no_fftree_one_plain_thought():
    seen = []
    fake = Fake({}, {FIG3_ROW["prompt"]: {(): 0.75}}, decide={"T": 0.8})
    fake.rows = [FIG3_ROW]

    def expand(reqs):
        seen.extend(reqs)
        return fake(reqs)

    res = seam.search([FIG3_ROW], expand, seam.SeamConfig(ablation="no_fftree"), P)
    assert [k for k, _ in fake.log] == ["thought", "entropy", "decide"]
    thought = seen[0].text
    assert not any(n in thought for n in P.names) and "Thought:" in thought  # no principles, no demos
    row = res.rows[0]
    assert row["stop_reason"] == "no_fftree" and row["knowledge"] == "T"
    assert row["tree"][1]["score"] == pytest.approx(i_of(0.75)) and row["weak_label"] == 0
    assert seen[-1].thought == "T"


def test_ablations_are_cumulative():
    flags = {a: (c.use_filter, c.use_backtrace, c.use_pat, c.use_fftree)
             for a in seam.ABLATIONS for c in [seam.SeamConfig(ablation=a)]}
    assert flags == {"none": (True, True, True, True), "no_filter": (False, True, True, True),
                     "no_backtrace": (False, False, True, True), "no_pat": (False, False, False, True),
                     "no_fftree": (False, False, False, False)}


def test_no_gain_means_no_knowledge():
    q = "flat"
    res, fake = run([{"prompt": q, "options": ["a", "b"]}], {q: {(): {O: 0.9}}}, {q: {(O,): 0.5}}, max_depth=1)
    row = res.rows[0]
    assert row["hidden"] is None and row["knowledge"] is None and row["tree_information"] == 0.0


# ---------------------------------------------------------------- baselines

def test_baselines_on_hand_examples():
    s = np.array([[0.9, 0.1], [0.4, 0.6], [0.55, 0.45]])
    w = np.array([[0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    assert seam.self_reward(s).tolist() == [0, 1, 0]
    labels, p = seam.ws_ensemble(s, w)
    assert p.ravel().tolist() == pytest.approx([0.6, 0.4, 0.3, 0.7, 0.575, 0.425]) and labels.tolist() == [0, 1, 0]
    labels, keep = seam.wsc_filter(s, w)
    assert labels.tolist() == [1, 1, 0] and keep.tolist() == [False, True, True]
    labels, corrected = seam.auxconf_correction(s, w, threshold=0.8)
    assert labels.tolist() == [0, 1, 0] and corrected.tolist() == [True, False, False]
    labels, corrected = seam.auxconf_correction(s, w, threshold=0.9)  # strictly higher than the threshold
    assert labels.tolist() == [1, 1, 0] and not corrected.any()
    with pytest.raises(ValueError):
        seam.self_reward([0.5, 0.5])


# ---------------------------------------------------------------- principles file and config

def test_principles_file_holds_the_papers_eleven():
    assert P.names == ["Informative", "Engaging", "Logical", "Candor", "Clarifying", "Law-abiding",
                       "No Risk Information", "Privacy Protection", "No NSFW Content", "Objective",
                       "Fairness and Kindness"]
    assert set(P.demonstrations) == set(P.names)
    assert all(len(d.responses) == 2 and d.thought for d in P.demonstrations.values())


GOOD = ("principles:\n  - {name: A, description: a}\n"
        "demonstrations:\n  - {principle: A, question: q, responses: [x, y], thought: t}\n")


@pytest.mark.parametrize("text, match", [
    ("principles: []\ndemonstrations: []\n", r"^principles: must be a non-empty list"),
    ("principles:\n  - {description: a}\ndemonstrations: []\n", r"^principles\[0\]\.name"),
    ("principles:\n  - {name: A, description: a}\n  - {name: A, description: b}\n",
     r"principles\[1\]\.name: duplicate"),
    ("principles:\n  - {name: A, description: a, weight: 2}\n", r"principles\[0\]\.weight: unknown field"),
    (GOOD.replace("principle: A", "principle: B"), r"demonstrations\[0\]\.principle: 'B' is not a principle"),
    (GOOD.replace("[x, y]", "[x]"), r"demonstrations\[0\]\.responses"),
    (GOOD.replace("thought: t", "thought: ''"), r"demonstrations\[0\]\.thought"),
    (GOOD + "  - {principle: A, question: q, responses: [x, y], thought: t}\n",
     r"demonstrations\[1\]\.principle: a second"),
    (GOOD.replace("\ndemonstrations", "\n  - {name: B, description: b}\ndemonstrations"),
     r"^demonstrations: no demonstration for principle 'B'"),
    ("principles:\n  - {name: A, description: a}\n", r"^demonstrations: must be a list"),
    (GOOD + "extra: 1\n", r"extra: unknown field"),
])
def test_principles_validation_errors(tmp_path, text, match):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        seam.load_principles(f)


def test_principles_valid_minimal_and_missing_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    assert seam.load_principles(f).names == ["A"]
    with pytest.raises(ValueError, match="file not found"):
        seam.load_principles(tmp_path / "nope.yaml")


@pytest.mark.parametrize("over, field", [
    ({"max_depth": 0}, "seam.max_depth"), ({"filter_percentile": 100}, "seam.filter_percentile"),
    ({"filter_percentile": -1}, "seam.filter_percentile"), ({"ablation": "no_tree"}, "seam.ablation"),
    ({"thought_max_new_tokens": 0}, "seam.thought_max_new_tokens"), ({"principles_path": ""}, "seam.principles_path"),
    ({"thought_template": "{prompt} {responses}"}, "seam.thought_template"),
    ({"knowledge_template": "{prompt}"}, "seam.knowledge_template"), ({"thought_stop": [""]}, "seam.thought_stop"),
    ({"shuffle_principles": "yes"}, "seam.shuffle_principles"), ({"principle_orders": 0}, "seam.principle_orders"),
    ({"principle_orders": 2.5, "shuffle_principles": True}, "seam.principle_orders"),
    ({"principle_orders": 3}, "seam.principle_orders"),  # several orders need the shuffle
])
def test_config_validation(over, field):
    # the class names its own field; the loader adds the section (seam.max_depth: ...)
    with pytest.raises(ValueError, match=f"^{field.removeprefix('seam.')}:"):
        seam.SeamConfig(**over)


def test_config_builds_from_yaml_values():
    from cluster.loader import build

    cfg = build(seam.SeamConfig, {"max_depth": 3, "ablation": "no_pat"}, "seam")
    assert cfg.max_depth == 3 and not cfg.use_pat
    assert not cfg.shuffle_principles and cfg.principle_orders == 1  # off by default
    cfg = build(seam.SeamConfig, {"shuffle_principles": True, "principle_orders": 4}, "seam")
    assert cfg.shuffle_principles and cfg.principle_orders == 4
    with pytest.raises(ValueError, match=r"^seam\.principle_orders:"):
        build(seam.SeamConfig, {"principle_orders": 0}, "seam")
    with pytest.raises(ValueError, match=r"^seam\.ablation:"):
        build(seam.SeamConfig, {"ablation": "x"}, "seam")


def test_fill_leaves_braces_in_user_text():
    assert seam.fill("{prompt}!", prompt="a {responses} b", responses="X") == "a {responses} b!"
