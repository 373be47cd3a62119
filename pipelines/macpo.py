"""MACPO's contrastive pairs (Lyu et al., ICLR 2025; seed 002 slides "MACPO"): weak teachers and a
strong student, each a learner with a positive and a negative agent, improve each other over
iterations of DPO.

Per iteration and per learner (every teacher and the student), for each prompt x:
  chosen    a positive answer from the OTHER learners' positive agents, the one with the lowest
            perplexity under the learner itself: PPL(y | x) = exp(-(1/|y|) sum_t log p(y_t | x, y_<t)),
            i.e. the largest mean token log-likelihood (the answer it finds most familiar);
  rejected  the answer of the learner's OWN negative agent;
then DPO of the learner's positive agent on those pairs (the reference scripts: beta 0.1 with an
SFT term of weight 0.2, lr 1e-5, one epoch per iteration).

Pure logic: `contrastive_pairs` takes the learner's scoring as a callable, so a stage can pass an
actor call (`sequence_logprobs`) and tests scripted scores. The iteration loop on Ray (agents as
actors, generation streamed, DPO on Ray Train) is not built yet.
"""

from __future__ import annotations

import math
from collections.abc import Callable

# logprob_fn(prompts, continuations) -> per row (sum of token log-probs, number of tokens)
LogprobFn = Callable[[list[str], list[str]], list[tuple[float, int]]]


def perplexity(logp_sum: float, n_tokens: int) -> float:
    """exp(-(1/|y|) sum_t log p(y_t | x, y_<t)); an answer of no token has no perplexity (inf)."""
    return math.exp(-logp_sum / n_tokens) if n_tokens > 0 else math.inf


def contrastive_pairs(learner: str, prompts: list[str], positives: dict[str, list[str]],
                      own_negative: list[str], logprob_fn: LogprobFn) -> list[dict]:
    """MACPO's pairs for `learner`: per prompt, chosen = the other learners' positive answer of
    lowest perplexity under the learner (one batched logprob_fn call for all candidates; ties: the
    first agent in `positives` order), rejected = the learner's own negative agent's answer.

    positives: agent name -> one positive answer per prompt (the learner's own entry, if present,
    is left out); own_negative: the learner's negative agent's answer per prompt. Rows whose chosen
    and rejected answers are equal, or with no candidate, give no pair. Each pair: prompt, chosen,
    rejected, chosen_from (the agent), chosen_ppl."""
    others = [a for a in positives if a != learner]
    if not others:
        raise ValueError(f"contrastive_pairs: no positive agent besides {learner!r}")
    if len(own_negative) != len(prompts) or any(len(positives[a]) != len(prompts) for a in others):
        raise ValueError("contrastive_pairs: every agent needs one answer per prompt")
    cand = [(i, a) for i in range(len(prompts)) for a in others if positives[a][i].strip()]
    scored = logprob_fn([prompts[i] for i, _ in cand], [positives[a][i] for i, a in cand]) if cand else []
    if len(scored) != len(cand):
        raise ValueError(f"contrastive_pairs: logprob_fn returned {len(scored)} rows for {len(cand)} candidates")
    best: dict[int, tuple[float, str]] = {}
    for (i, a), (lp, n) in zip(cand, scored):
        ppl = perplexity(float(lp), int(n))
        if i not in best or ppl < best[i][0]:
            best[i] = (ppl, a)
    pairs = []
    for i, prompt in enumerate(prompts):
        if i not in best:
            continue
        ppl, agent = best[i]
        chosen, rejected = positives[agent][i], own_negative[i]
        if chosen.strip() == rejected.strip() or not rejected.strip():
            continue
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "chosen_from": agent,
                      "chosen_ppl": ppl})
    return pairs
