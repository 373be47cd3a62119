"""Stop strings in generation (HF backend, tiny random model): the text is cut before the stop
string and its log-probability sums the tokens kept (`actors.backend.apply_stop`)."""

import pytest

from actors.backend import BackendConfig, apply_stop, check_stop, stop_cut
from actors.hf_backend import HFBackend

PROMPTS = ["The weak model said", "Hi"]  # different lengths: the short one is left-padded
# tiny:llama:7 repeats one token, then switches to another: " said" x 9, " unfortunately" x 7 and
# ":" x 10, " Satellite" x 6, so a stop string can start first at a token's start or inside it
SWITCHING = ["The weak model said", "List three colors:"]
N = 16


@pytest.fixture(scope="module")
def tiny():
    return HFBackend("tiny:llama:7", BackendConfig(dtype="float32", threads=1))


def _stop_inside(text: str) -> str:
    """A two-character stop string from the second half of text whose first occurrence is not at 0."""
    for a in range(len(text) // 2, len(text) - 1):
        s = text[a:a + 2]
        if s.strip() and text.find(s) > 0:
            return s
    raise AssertionError(f"no usable stop string in {text!r}")


def _prefix_runs(b: HFBackend, prompt: str, n: int) -> list[tuple[str, float]]:
    """Greedy (text, log-prob) after k = 0..n tokens, each its own run: the unstopped run's prefixes."""
    runs = [("", 0.0)] + [b.generate([prompt], max_new_tokens=k)[0][0] for k in range(1, n + 1)]
    assert all(b[0].startswith(a[0]) for a, b in zip(runs, runs[1:]))  # token j's text: runs[j] less runs[j-1]
    return runs


def _pick_stop(runs, inside: bool) -> tuple[str, str, int]:
    """(stop string, expected text, tokens kept): a stop string from the second half of the run whose
    first occurrence starts at token j's start (j - 1 tokens kept) or one character into it (j kept)."""
    full = runs[-1][0]
    for j in range(len(runs) // 2, len(runs)):
        start, piece = len(runs[j - 1][0]), runs[j][0][len(runs[j - 1][0]):]
        stop = piece[1:3] if inside else piece[:2]
        if len(stop) == 2 and stop.strip() and full.find(stop) == start + inside:
            return stop, full[:start + inside], j if inside else j - 1
    raise AssertionError(f"no usable stop string in {full!r}")


@pytest.mark.parametrize("inside", [False, True], ids=["at-token-start", "inside-a-token"])
def test_greedy_stop_cuts_text_and_sums_the_kept_tokens(tiny, inside):
    for prompt in SWITCHING:
        runs = _prefix_runs(tiny, prompt, N)
        stop, want, kept = _pick_stop(runs, inside)
        seen = tiny.tokens_seen
        [(got, got_lp)] = tiny.generate([prompt], max_new_tokens=N, stop=[stop])[0]
        assert tiny.tokens_seen - seen < len(tiny.tok(prompt)["input_ids"]) + N  # it stopped early
        assert got == want and stop not in got
        # the kept tokens' log-probs: those of the unstopped run's first `kept` tokens, no more, no fewer
        assert got_lp == pytest.approx(runs[kept][1], abs=1e-4)
        assert abs(runs[kept + 1][1] - runs[kept][1]) > 1e-3 and abs(runs[kept][1] - runs[kept - 1][1]) > 1e-3


def test_stop_acts_per_row_in_a_batch(tiny):
    full = tiny.generate(PROMPTS, max_new_tokens=N)
    stop = _stop_inside(full[0][0][0])
    batched = tiny.generate(PROMPTS, max_new_tokens=N, stop=[stop])
    for prompt, [(text, _)], [(got, got_lp)] in zip(PROMPTS, full, batched):
        alone = tiny.generate([prompt], max_new_tokens=N, stop=[stop])[0][0]
        assert got == (text[:text.find(stop)] if stop in text else text)
        assert (got, got_lp) == (alone[0], pytest.approx(alone[1], abs=1e-4))


def test_absent_or_empty_stop_changes_nothing(tiny):
    full = tiny.generate(PROMPTS, max_new_tokens=8)
    assert tiny.generate(PROMPTS, max_new_tokens=8, stop=[]) == full
    absent = tiny.generate(PROMPTS, max_new_tokens=8, stop=["\x00never\x00"])
    assert [[(t, pytest.approx(lp, abs=1e-5))] for [(t, lp)] in full] == absent


def test_stop_at_the_start_gives_empty_text_and_zero_logprob(tiny):
    [(text, _)] = tiny.generate(PROMPTS[:1], max_new_tokens=N)[0]
    assert tiny.generate(PROMPTS[:1], max_new_tokens=N, stop=[text[:1]]) == [[("", 0.0)]]


def test_sampled_rows_are_the_unstopped_samples_cut(tiny):
    # the sampler draws for every row at every step, so stopping a row changes no other draw
    full = tiny.generate(PROMPTS, num_samples=3, max_new_tokens=N, temperature=1.0, seed=3)
    stop = _stop_inside(full[0][0][0])
    cut = tiny.generate(PROMPTS, num_samples=3, max_new_tokens=N, temperature=1.0, seed=3, stop=[stop])
    for row_full, row_cut in zip(full, cut):
        for (text, lp), (got, got_lp) in zip(row_full, row_cut):
            assert got == (text[:text.find(stop)] if stop in text else text)
            assert got_lp <= 0 and (got_lp >= lp - 1e-4)  # a prefix: fewer negative terms


def test_apply_stop_by_hand(tiny):
    tok = tiny.tok
    ids = tok("Hello world.", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in ids] == ["Hello", " world", "."]
    logps = [-1.0, -2.0, -4.0]
    assert apply_stop(tok, ids, logps, ["."]) == ("Hello world", -3.0)
    assert apply_stop(tok, ids, logps, ["orl"]) == ("Hello w", -3.0)  # " world" completes "Hello w"
    assert apply_stop(tok, ids, logps, [" world"]) == ("Hello", -1.0)
    assert apply_stop(tok, ids, logps, ["Hell"]) == ("", 0.0)
    assert apply_stop(tok, ids, logps, ["zzz"]) == ("Hello world.", -7.0)
    # the stop string that ends first wins (ties: the earlier in the list), as in vLLM
    assert stop_cut("Hello world.", ["world.", "ld"]) == 9
    assert stop_cut("Hello world.", ["d.", "ld."]) == 10 and stop_cut("Hello world.", ["ld.", "d."]) == 9
    assert stop_cut("Hello", ["x"]) is None


def test_bad_stop_refused():
    assert check_stop(None) is None and check_stop([]) is None and check_stop(("a",)) == ["a"]
    with pytest.raises(ValueError, match="list of strings"):
        check_stop("\n")
    with pytest.raises(ValueError, match="non-empty"):
        check_stop(["a", ""])
