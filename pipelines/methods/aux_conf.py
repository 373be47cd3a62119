"""Auxiliary confidence loss (Burns et al.; seed 003 Eq. 1): the strong model is trained towards
a mix of the weak label and its own hardened prediction, gamma warmed up to
strong.train.gamma_max over strong.train.gamma_warmup_frac of the steps."""

from __future__ import annotations

from pipelines.methods.registry import Method, register
from pipelines.methods.weak_vote import vote_examples
from training import losses as L


def loss(logp, logits, batch, ctx):
    """L = (1 - gamma) CE(f, y_weak) + gamma CE(f, hard(f)) (training.losses.aux_confidence_loss)."""
    return L.aux_confidence_loss(logp, batch["target"], ctx.gamma), {"gamma": ctx.gamma}


register(Method("aux_conf", "auxiliary confidence loss (seed 003 Eq. 1, gamma warm-up)", vote_examples, loss=loss))
