"""Weak-to-strong search by chunk-level beam search (CBS; Zhou et al., NeurIPS 2024, seed 002
slides "Weak-to-Strong Search"): a frozen large model is steered at decoding time by a small
tuned / untuned pair, with no training of the large model.

Per prompt x the search keeps W beams. Each step, every live beam y gets K successor chunks of
L tokens sampled from the large model pi_base(. | x, y) (temperature 0.7, top-k 50 in the
reference code); every hypothesis is scored by

    s(x, y) = log pi_tuned(y | x) - log pi_untuned(y | x)

summed over the whole response so far (each small model re-tokenises the text with its own
tokenizer and template, so the large model may have another vocabulary), and the W best survive.
The first step draws W*K independent samples from the empty response. A hypothesis is finished
when its chunk ends with the end token or a stop string, or the response reaches max_new_tokens;
it stays in the pool with the score that includes its end token (`finished=True` to the scorer)
and competes with the new hypotheses for the W places. The search ends when the W best are all
finished; the answer is the best one.

W = 1, K = N, L = infinity (chunk_tokens 0) is Best-of-N by s; W = K = 1 is plain sampling.
The reference code repeats each kept beam K times, so a finished beam can fill several of the W
places with copies; here every hypothesis is one entry (a finished one is not sampled again).

Pure logic: `chunk_beam_search` takes two callables, so the Ray Data stage
(pipelines/search_stage.py) passes batched actor calls and tests pass scripted ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# sample_fn(prompts, partials, n, max_tokens) -> per row n (chunk text, chunk tokens, ended)
SampleFn = Callable[[list[str], list[str], int, list[int]], list[list[tuple[str, int, bool]]]]
# score_fn(prompts, responses, finished) -> per row s(x, y)
ScoreFn = Callable[[list[str], list[str], list[bool]], list[float]]


@dataclass
class Hypothesis:
    text: str = ""  # the response so far
    tokens: int = 0  # large-model tokens in it
    finished: bool = False
    score: float = 0.0
    parent: int = -1  # index of the beam it grew from in the previous step's pool (-1: the root)


def check_search(width: int, successors: int, chunk_tokens: int, max_new_tokens: int) -> None:
    if width < 1:
        raise ValueError(f"width: must be >= 1, got {width}")
    if successors < 1:
        raise ValueError(f"successors: must be >= 1, got {successors}")
    if chunk_tokens < 0:
        raise ValueError(f"chunk_tokens: must be >= 0 (0: one chunk of max_new_tokens), got {chunk_tokens}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: must be >= 1, got {max_new_tokens}")


def select(pool: list[Hypothesis], width: int) -> list[Hypothesis]:
    """The `width` best hypotheses by score, best first; ties keep pool order (a stable sort)."""
    return sorted(pool, key=lambda h: -h.score)[:width]


def chunk_beam_search(prompts: list[str], sample_fn: SampleFn, score_fn: ScoreFn, *, width: int,
                      successors: int, chunk_tokens: int, max_new_tokens: int) -> list[dict]:
    """CBS for a batch of prompts. Each step makes ONE batched sample_fn call (every live beam of
    every prompt) and ONE batched score_fn call (every new hypothesis).

    sample_fn(prompts, partials, n, max_tokens): n chunks per row continuing prompt + partial, each
    (text, number of large-model tokens, ended by the end token or a stop string), at most
    max_tokens[row] tokens; score_fn(prompts, responses, finished): s(x, y) per row.

    Per prompt: {"response": the best hypothesis' text, "score", "tokens", "finished", "steps",
    "samples": chunks drawn for this prompt, "generated": large-model tokens in them, "scored":
    hypotheses scored (each one tuned and one untuned teacher-forced pass), "beams": the final pool [{text, score, tokens,
    finished}], best first}.
    """
    check_search(width, successors, chunk_tokens, max_new_tokens)
    chunk = chunk_tokens or max_new_tokens
    pools = [[Hypothesis()] for _ in prompts]
    steps, samples = [0] * len(prompts), [0] * len(prompts)
    generated, scored = [0] * len(prompts), [0] * len(prompts)
    first = True
    while True:
        todo = [(r, b, h) for r, pool in enumerate(pools) for b, h in enumerate(pool) if not h.finished]
        if not todo:
            break
        n = width * successors if first else successors
        out = sample_fn([prompts[r] for r, _, _ in todo], [h.text for _, _, h in todo], n,
                        [min(chunk, max_new_tokens - h.tokens) for _, _, h in todo])
        if len(out) != len(todo) or any(len(c) != n for c in out):
            raise ValueError(f"chunk_beam_search: sample_fn must return {n} chunks for each of {len(todo)} rows")
        new: list[tuple[int, Hypothesis]] = []
        for (r, b, h), chunks in zip(todo, out):
            for text, ntok, ended in chunks:
                generated[r] += int(ntok)
                tokens = h.tokens + int(ntok)
                # a chunk of no token cannot grow the beam further: it ends it
                done = bool(ended) or tokens >= max_new_tokens or int(ntok) == 0
                new.append((r, Hypothesis(h.text + text, tokens, done, 0.0, b)))
        scores = score_fn([prompts[r] for r, _ in new], [h.text for _, h in new], [h.finished for _, h in new])
        if len(scores) != len(new):
            raise ValueError(f"chunk_beam_search: score_fn must return {len(new)} scores")
        for (_, h), s in zip(new, scores):
            h.score = float(s)
        grown = {r for r, _, _ in todo}
        for r in grown:
            # finished beams first: on a tie the hypothesis already kept stays
            pool = [h for h in pools[r] if h.finished] + [h for rr, h in new if rr == r]
            pools[r] = select(pool, width)
            steps[r] += 1
            samples[r] += sum(1 for rr, _ in new if rr == r)
            scored[r] += sum(1 for rr, _ in new if rr == r)
        first = False
    return [{"response": pool[0].text, "score": pool[0].score, "tokens": pool[0].tokens, "finished": pool[0].finished,
             "steps": steps[r], "samples": samples[r], "generated": generated[r], "scored": scored[r],
             "beams": [{"text": h.text, "score": h.score, "tokens": h.tokens, "finished": h.finished} for h in pool]}
            for r, pool in enumerate(pools)]


def best_of_n(prompts: list[str], sample_fn: SampleFn, score_fn: ScoreFn, *, n: int,
              max_new_tokens: int) -> list[dict]:
    """Best-of-N by s(x, y): CBS with W = 1, K = N, L = infinity."""
    return chunk_beam_search(prompts, sample_fn, score_fn, width=1, successors=n, chunk_tokens=0,
                             max_new_tokens=max_new_tokens)
