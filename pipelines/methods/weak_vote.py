"""Weak labels from the weak models' vote (`annotate.method`: naive | ensemble) and the W2S
methods that train on a hard or soft weak label.

Labellers (pipelines/annotate.py streams them):
  naive     one weak model; its argmax is the label
  ensemble  N weak models, weighted soft vote sum_i w_i p_i (seed 003 Eq. 2 weights)
Methods:
  naive     cross-entropy on the weak label (Burns et al.'s naive W2S)
  soft      cross-entropy on the weak ensemble's probabilities (soft labels)
"""

from __future__ import annotations

import numpy as np

from pipelines.methods.registry import Labeller, Method, register
from pipelines.methods.reliability import annotate, read, report
from training import losses as L
from training.examples import example


def vote_examples(rows: list[dict], cfg) -> list[dict]:
    """One example per row, options in their shown order: the weak label (`target`), the
    ensemble's probabilities (`soft`), and each weak model's argmax / probabilities
    (`weak_labels`, `weak_probs`: seed 003 Eq. 2 and Eq. 4)."""
    # the weak models are the rows' probs_<name> columns, in the labelling stage's order (an
    # intermediate model of bootstrapping labels as "intermediate")
    names = [k.removeprefix("probs_") for k in (rows[0] if rows else {}) if k.startswith("probs_")]
    out = []
    for r in rows:
        per_model = [r[f"probs_{n}"] for n in names]
        out.append(example(r, range(len(r["options"])), cfg.template, target=r["weak_label"],
                            soft=list(r["weak_probs"]), weak_labels=[int(np.argmax(p)) for p in per_model],
                            weak_probs=[list(p) for p in per_model], weight=1.0))
    if not out:
        raise ValueError("no training examples: the weak labels hold no row")
    return out


def soft_loss(logp, logits, batch, ctx):
    """-sum_k q_k log p_k with q the weak ensemble's probabilities (training.losses.soft_cross_entropy)."""
    return L.soft_cross_entropy(logp, batch["soft"]), {}


register(Labeller("naive", "one weak model's argmax", annotate, read, report=report))
register(Labeller("ensemble", "weighted soft vote of N weak models (seed 003 Eq. 2 weights)", annotate, read,
                  report=report))
register(Method("naive", "cross-entropy on the weak label", vote_examples))
register(Method("soft", "cross-entropy on the weak ensemble's probabilities", vote_examples, loss=soft_loss))


def ensemble_loss(logp, logits, batch, ctx):
    """Seed 003 Eq. 2: sum_i w_i CE(f, argmax p_i), each weak model's own answer weighted by the
    normalised weak.models[i].weight (training.losses.naive_multi_weak_loss)."""
    return L.naive_multi_weak_loss(logp, batch["weak_labels"], ctx.weak_weights), {}


register(Method("ensemble", "naive multi-weak loss (seed 003 Eq. 2)", vote_examples, loss=ensemble_loss))
