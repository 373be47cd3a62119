"""Chunk-level beam search (pipelines/cbs.py) with scripted models: every rule forced by hand."""

import pytest

from pipelines.cbs import best_of_n, chunk_beam_search


class Script:
    """A scripted large model: chunk j of a call for partial p is the next letter of `chunks[p]`;
    `ends` lists the texts whose chunk ends them. Scores come from a table (unknown texts: -9)."""

    def __init__(self, chunks: dict[str, list[str]], scores: dict[str, float], ends=()):
        self.chunks, self.scores, self.ends = chunks, scores, set(ends)
        self.sampled: list[tuple[list[str], int, list[int]]] = []
        self.scored: list[tuple[list[str], list[bool]]] = []

    def sample(self, prompts, partials, n, max_tokens):
        self.sampled.append((list(partials), n, list(max_tokens)))
        out = []
        for p in partials:
            row = self.chunks[p][:n]
            out.append([(c, 1, p + c in self.ends) for c in row])
        return out

    def score(self, prompts, responses, finished):
        self.scored.append((list(responses), list(finished)))
        return [self.scores.get(r, -9.0) for r in responses]


def test_keeps_exactly_the_w_best_by_score_each_step():
    # W = 2, K = 2, L = 1 token, 2 tokens in all: step 1 draws W*K = 4 samples from the root
    chunks = {"": ["a", "b", "c", "d"], "b": ["x", "y"], "d": ["x", "y"]}
    scores = {"a": 0.1, "b": 0.9, "c": -1.0, "d": 0.5, "bx": 0.2, "by": 0.3, "dx": 1.5, "dy": -0.5}
    m = Script(chunks, scores)
    out = chunk_beam_search(["q"], m.sample, m.score, width=2, successors=2, chunk_tokens=1, max_new_tokens=2)[0]
    # step 1 keeps b (0.9) and d (0.5); step 2 grows exactly those two, K = 2 each
    assert m.sampled[0] == ([""], 4, [1])
    assert m.sampled[1] == (["b", "d"], 2, [1, 1])
    assert len(m.sampled) == 2
    # the final pool: the 2 best of {bx, by, dx, dy} by score, best first; the answer is dx
    assert [b["text"] for b in out["beams"]] == ["dx", "by"]
    assert out["response"] == "dx" and out["score"] == 1.5
    assert out["samples"] == 8 and out["steps"] == 2 and out["tokens"] == 2 and out["finished"]
    # the last step's hypotheses reach max_new_tokens: they are scored as finished (with their end)
    assert m.scored[1] == (["bx", "by", "dx", "dy"], [True] * 4)
    assert m.scored[0] == (["a", "b", "c", "d"], [False] * 4)


def test_finished_beams_stay_in_the_pool_and_are_not_grown():
    # "a" ends in step 1 with the best score; it keeps its place, is never sampled again, and wins
    chunks = {"": ["a", "b", "c", "d"], "b": ["x", "y"], "bx": ["z", "w"], "by": ["z", "w"]}
    scores = {"a": 2.0, "b": 1.0, "c": 0.0, "d": -1.0, "bx": 0.5, "by": 1.9, "byz": 1.0, "byw": 0.4}
    m = Script(chunks, scores, ends={"a"})
    out = chunk_beam_search(["q"], m.sample, m.score, width=2, successors=2, chunk_tokens=1, max_new_tokens=3)[0]
    assert [p for call in m.sampled for p in call[0]] == ["", "b", "by"]
    assert out["response"] == "a" and out["score"] == 2.0 and out["tokens"] == 1
    # pool after step 2: a (finished, 2.0) and by (1.9); after step 3: a and byz
    assert [(b["text"], b["finished"]) for b in out["beams"]] == [("a", True), ("byz", True)]
    assert m.scored[0][1] == [True, False, False, False]  # "a" scored with its end


def test_a_finished_beam_can_lose_its_place():
    chunks = {"": ["a", "b"], "b": ["x"]}
    scores = {"a": 1.0, "b": 0.5, "bx": 3.0}
    m = Script(chunks, scores, ends={"a"})
    out = chunk_beam_search(["q"], m.sample, m.score, width=1, successors=2, chunk_tokens=1, max_new_tokens=2)[0]
    # W = 1: step 1 keeps "a" (finished); nothing is live, so the search ends with "a"
    assert out["response"] == "a" and len(m.sampled) == 1
    m2 = Script({"": ["a", "b", "c", "d"], "b": ["x", "y"]}, {"a": 1.0, "b": 1.2, "bx": 3.0, "by": 2.0},
                ends={"a"})
    out = chunk_beam_search(["q"], m2.sample, m2.score, width=2, successors=2, chunk_tokens=1, max_new_tokens=2)[0]
    # pool after step 1: b (1.2, live), a (1.0, finished); step 2: the top 2 of {a, bx, by} leave a out
    assert [b["text"] for b in out["beams"]] == ["bx", "by"]


def test_best_of_n_is_cbs_with_w1_kn_and_one_chunk():
    samples = {"": ["s0", "s1", "s2", "s3"]}
    scores = {"s0": 0.3, "s1": 1.7, "s2": -0.2, "s3": 1.1}
    m = Script(samples, scores, ends=samples[""])
    out = best_of_n(["q"], m.sample, m.score, n=4, max_new_tokens=16)[0]
    # one call for N samples of the whole budget (L = infinity), the argmax of s picked
    assert m.sampled == [([""], 4, [16])]
    assert out["response"] == max(scores, key=scores.get) == "s1"
    m2 = Script(samples, scores, ends=samples[""])
    same = chunk_beam_search(["q"], m2.sample, m2.score, width=1, successors=4, chunk_tokens=0,
                             max_new_tokens=16)[0]
    assert same == out


def test_w1_k1_is_plain_sampling_whatever_the_scores():
    chunks = {"": ["t"], "t": ["h"], "th": ["e"]}
    m = Script(chunks, {"t": -5.0, "th": -7.0, "the": -9.0}, ends={"the"})
    out = chunk_beam_search(["q"], m.sample, m.score, width=1, successors=1, chunk_tokens=1, max_new_tokens=10)[0]
    assert out["response"] == "the" and out["steps"] == 3 and out["samples"] == 3 and out["finished"]


def test_batched_prompts_grow_independently_in_one_call_per_step():
    chunks = {"": ["a", "b"], "b": ["c", "d"]}
    m = Script(chunks, {"a": 1.0, "b": 2.0, "ac": 0.0, "bc": 5.0}, ends={"a"})
    out = chunk_beam_search(["p1", "p2"], m.sample, m.score, width=1, successors=2, chunk_tokens=1,
                            max_new_tokens=2)
    # both prompts' roots in the first call; p1 and p2 keep b and go on together in the second
    assert m.sampled[0] == (["", ""], 2, [1, 1]) and m.sampled[1] == (["b", "b"], 2, [1, 1])
    assert [o["response"] for o in out] == ["bc", "bc"]


def test_the_last_chunk_is_cut_to_the_budget_and_bad_shapes_are_refused():
    chunks = {"": ["ab"], "ab": ["c"]}

    class Two(Script):
        def sample(self, prompts, partials, n, max_tokens):
            self.sampled.append((list(partials), n, list(max_tokens)))
            return [[(self.chunks[p][0], min(2, mt), False)] for p, mt in zip(partials, max_tokens)]

    m = Two(chunks, {})
    out = chunk_beam_search(["q"], m.sample, m.score, width=1, successors=1, chunk_tokens=2, max_new_tokens=3)[0]
    assert [c[2] for c in m.sampled] == [[2], [1]] and out["tokens"] == 3 and out["finished"]
    with pytest.raises(ValueError, match="sample_fn must return 2 chunks"):
        chunk_beam_search(["q"], lambda p, q, n, m: [[("a", 1, False)]], m.score, width=1, successors=2,
                          chunk_tokens=1, max_new_tokens=2)
    for kw, key in [({"width": 0}, "width"), ({"successors": 0}, "successors"), ({"chunk_tokens": -1}, "chunk_tokens"),
                    ({"max_new_tokens": 0}, "max_new_tokens")]:
        args = {"width": 1, "successors": 1, "chunk_tokens": 1, "max_new_tokens": 1, **kw}
        with pytest.raises(ValueError, match=key):
            chunk_beam_search(["q"], m.sample, m.score, **args)
