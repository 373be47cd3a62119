"""Reliability-aware weak labels (Guo & Yang, seed 001): small pure functions, one per equation.

A question x is asked N times with its answer options in different orders (prompt variations
x_1..x_N, section 4.1); a_i is the weak answer to x_i, mapped back to the original option index.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Sequence

import numpy as np


def option_permutations(num_options: int, n: int, seed: int | str) -> list[tuple[int, ...]]:
    """The option orders to ask: all K! when n == 0 or n >= K!, else the identity plus n-1 others
    sampled without replacement (deterministic per seed, e.g. the row id)."""
    if num_options < 1:
        raise ValueError("option_permutations: num_options must be >= 1")
    total = math.factorial(num_options)
    if n <= 0 or n >= total:
        return list(itertools.permutations(range(num_options)))
    rng = random.Random(f"{seed}")
    picked = {tuple(range(num_options))}
    while len(picked) < n:
        perm = list(range(num_options))
        rng.shuffle(perm)
        picked.add(tuple(perm))
    rest = sorted(picked - {tuple(range(num_options))})
    return [tuple(range(num_options))] + rest


def empirical_distribution(answers: Sequence[int], num_options: int) -> np.ndarray:
    """Eq. 2: p(y_k | x) = (1/N) sum_i 1[a_i = y_k], returned over all K options (0 where unseen)."""
    if len(answers) == 0:
        raise ValueError("empirical_distribution: no answers")
    counts = np.bincount(np.asarray(answers, dtype=np.int64), minlength=num_options)[:num_options]
    return counts / len(answers)


def answer_entropy(p: np.ndarray) -> float:
    """Eq. 3: S_ent(x) = -sum_k p(y_k|x) log p(y_k|x) over the prediction set (p > 0), natural log."""
    p = np.asarray(p, dtype=np.float64)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def reliability_scores(answers: Sequence[int], temperature: float = 0.2) -> np.ndarray:
    """Eq. 4: S_prob(x_i, a_i) = exp(p(y_{k_i}|x)/T) / sum_{k in Y_hat} exp(p(y_k|x)/T).

    The softmax runs over the prediction set Y_hat (the distinct answers), with p from Eq. 2.
    Returns one score per answer a_i.
    """
    if temperature <= 0:
        raise ValueError("reliability_scores: temperature must be > 0")
    n = len(answers)
    if n == 0:
        raise ValueError("reliability_scores: no answers")
    freq = {k: c / n for k, c in Counter(answers).items()}
    denom = sum(math.exp(p / temperature) for p in freq.values())
    return np.array([math.exp(freq[a] / temperature) / denom for a in answers])


def uncertainty_threshold(entropies: Sequence[float], percentile: float = 50.0) -> float:
    """Section 4.2: tau = the given percentile of all S_ent values; rows with S_ent <= tau are kept."""
    if len(entropies) == 0:
        raise ValueError("uncertainty_threshold: no entropies")
    return float(np.percentile(np.asarray(entropies, dtype=np.float64), percentile))


def uncertainty_filter(entropies: Sequence[float], percentile: float = 50.0,
                       tie_break: Sequence[float] | None = None) -> np.ndarray:
    """Rows kept by the uncertainty filter (section 4.2), as a boolean mask.

    Without tie_break: exactly the paper's rule, S_ent(x) <= tau. With few prompt variations
    (K = 2 has only 2 option orders) S_ent takes a handful of values, and the rule keeps far more
    or fewer rows than the percentile says. tie_break (lower = more certain, e.g. the entropy of
    the soft vote) then keeps as many rows as the paper's rule keeps on distinct values,
    floor(percentile% * (n - 1)) + 1 (tau is np.percentile's linear interpolation, so this is the
    count of values <= tau): lowest S_ent first, ties by tie_break. Where S_ent has no ties, both
    rules keep the same rows.
    """
    ent = np.asarray(entropies, dtype=np.float64)
    if tie_break is None:
        return ent <= uncertainty_threshold(ent, percentile)
    n_keep = int(math.floor(percentile / 100.0 * (len(ent) - 1) + 1e-9)) + 1 if len(ent) else 0
    order = np.lexsort((np.arange(len(ent)), np.asarray(tie_break, dtype=np.float64), ent))
    kept = np.zeros(len(ent), dtype=bool)
    kept[order[:n_keep]] = True
    return kept


def reweighted_loss(losses: Sequence[float], scores: Sequence[float]) -> float:
    """Eq. 5: L_rew(X, A) = (1/N) sum_i S_prob(x_i, a_i) * L_CLM(x_i, a_i), for one question."""
    losses, scores = np.asarray(losses, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    return float((scores * losses).mean())
