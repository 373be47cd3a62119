"""Joint decoding across weak models by re-ranking their beams (seed 003 section 4.1, Eq. 6).

Each of the N weak models proposes its top M beams; the union of the M x N texts is scored by
every weak model by teacher forcing *from the text* (each with its own tokenizer), and the
candidate with the largest weighted sum of sequence probabilities becomes the target:

    y_w = argmax_m sum_{i=1..N} lambda_i P(y(m) | theta_i)                              (Eq. 6)

P is the sequence probability exp(sum_t log p_i(y_t | x, y_<t)) over model i's tokens of the
text: a probability (not a log-probability) and not length-normalised, as Eq. 6 is written
(the prose's "(log-)probabilities" are what is summed over tokens to get P). A weighted sum of
log-probabilities would be another rule (a geometric pool) and can pick another candidate.
The argmax is taken on log(sum_i lambda_i P_i) = logsumexp_i(log lambda_i + log P_i), the same
order without underflow for long sequences.

Pure logic: `joint_decode` takes two callables, so a Ray Data stage can pass actor calls
(`WeakActor.beam_search`, `WeakActor.sequence_logprobs`) and tests can pass scripted ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Beam = str | tuple[str, float]


def _check_weights(weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or not len(w) or not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError(f"joint decoding weights must be finite, >= 0 and not all 0, got {list(weights)}")
    return w


def candidates(per_model_beams: Sequence[Sequence[Beam]]) -> list[dict]:
    """The union of one prompt's M x N beams, deduplicated by exact text, in first-seen order
    (model 0's beams best first, then model 1's, ...). Each: {"text", "proposed_by": [model i],
    "beam_logps": [the proposer's own beam score, or None]}. Empty texts are left out: a
    sequence probability needs at least one token (`sequence_logprobs` refuses them)."""
    out: dict[str, dict] = {}
    for i, beams in enumerate(per_model_beams):
        for beam in beams:
            text, score = (beam, None) if isinstance(beam, str) else (beam[0], beam[1])
            if not text:
                continue
            cand = out.setdefault(text, {"text": text, "proposed_by": [], "beam_logps": []})
            if i not in cand["proposed_by"]:
                cand["proposed_by"].append(i)
                cand["beam_logps"].append(None if score is None else float(score))
    return list(out.values())


def joint_scores(logps: Sequence[Sequence[float]], weights: Sequence[float]) -> list[float]:
    """Eq. 6 score of each candidate m: sum_i lambda_i P(y(m) | theta_i), P = exp(log P).
    logps: [N models][C candidates] summed token log-probabilities (teacher forcing)."""
    w = _check_weights(weights)
    lp = np.asarray(logps, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[0] != len(w):
        raise ValueError(f"joint_scores: logps must be [N={len(w)}][C], got shape {lp.shape}")
    return (w[:, None] * np.exp(lp)).sum(0).tolist()


def joint_log_scores(logps: Sequence[Sequence[float]], weights: Sequence[float]) -> list[float]:
    """log of the Eq. 6 score, logsumexp_i(log lambda_i + log P_i(y(m))): the same order as
    `joint_scores` without underflow. Models with lambda_i = 0 drop out."""
    w = _check_weights(weights)
    lp = np.asarray(logps, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[0] != len(w):
        raise ValueError(f"joint_log_scores: logps must be [N={len(w)}][C], got shape {lp.shape}")
    terms = np.log(w[w > 0])[:, None] + lp[w > 0]
    top = terms.max(0)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):  # a candidate every model gives probability 0: -inf
        return (safe + np.log(np.exp(terms - safe).sum(0))).tolist()


def pick_target(log_scores: Sequence[float]) -> int:
    """Eq. 6 argmax_m: index of the largest score (the first one on ties, i.e. the earliest
    proposed candidate)."""
    if not len(log_scores):
        raise ValueError("pick_target: no candidates")
    return int(np.argmax(np.asarray(log_scores, dtype=np.float64)))


def _logp_and_len(x) -> tuple[float, int | None]:
    """A `sequence_logprobs` row (log p, n tokens) or a bare log p."""
    return (float(x[0]), int(x[1])) if isinstance(x, (tuple, list)) else (float(x), None)


def joint_decode(prompts: list[str], beams_fn: Callable[[int, list[str]], list[list[Beam]]],
                 logprob_fn: Callable[[int, list[str], list[str]], list], weights: Sequence[float],
                 num_beams: int, clean: Callable[[str], str] | None = None) -> list[dict]:
    """Eq. 6 for a batch of prompts.

    beams_fn(i, prompts) -> per prompt the beams of weak model i ((text, logp) or text), best first;
    logprob_fn(i, prompts, continuations) -> per pair (sum log p, n tokens) or sum log p, scored by
    model i by teacher forcing from the text. Each is called once per weak model for the whole
    batch (logprob_fn is skipped when the batch has no non-empty candidate). The first num_beams
    beams of each model are kept (M); clean (e.g. strip) is applied to each beam text first.

    Per prompt (JSON-serialisable): {"target": text or None, "target_index", "candidates": [{"text",
    "proposed_by", "beam_logps", "logps": [N], "num_tokens": [N], "score": Eq. 6 sum,
    "log_score": its log}]}.
    """
    w = _check_weights(weights)
    if num_beams < 1:
        raise ValueError("joint_decode: num_beams must be >= 1")
    beams = [beams_fn(i, prompts) for i in range(len(w))]
    if any(len(b) != len(prompts) for b in beams):
        raise ValueError("joint_decode: beams_fn returned a different number of rows than prompts")
    rows = []
    for r in range(len(prompts)):
        per_model = [[(clean(b) if isinstance(b, str) else (clean(b[0]), b[1])) if clean else b
                      for b in beams[i][r][:num_beams]] for i in range(len(w))]
        rows.append(candidates(per_model))
    flat_p = [p for p, cands in zip(prompts, rows) for _ in cands]
    flat_c = [c["text"] for cands in rows for c in cands]
    scored = [[_logp_and_len(x) for x in logprob_fn(i, flat_p, flat_c)] if flat_c else [] for i in range(len(w))]
    if any(len(s) != len(flat_c) for s in scored):
        raise ValueError("joint_decode: logprob_fn returned a different number of rows than continuations")
    out, pos = [], 0
    for cands in rows:
        for i, c in enumerate(cands):
            c["logps"] = [scored[m][pos + i][0] for m in range(len(w))]
            c["num_tokens"] = [scored[m][pos + i][1] for m in range(len(w))]
        pos += len(cands)
        out.append(_pick_row(cands, weights))
    return out


def _pick_row(cands: list[dict], weights: Sequence[float]) -> dict:
    if not cands:
        return {"target": None, "target_index": None, "candidates": []}
    logps = [[c["logps"][m] for c in cands] for m in range(len(weights))]
    for c, s, ls in zip(cands, joint_scores(logps, weights), joint_log_scores(logps, weights)):
        c["score"], c["log_score"] = s, ls
    best = pick_target([c["log_score"] for c in cands])
    return {"target": cands[best]["text"], "target_index": best, "candidates": cands}
