"""The Bayesian multi-weak loss (seed 003 section 3, Eq. 3-5): evidential deep learning against
every weak model's probabilities, with Appendix B's KL term annealed over
strong.train.edl_anneal_frac of the steps (weight strong.train.edl_lambda)."""

from __future__ import annotations

from pipelines.methods.registry import Method, register
from pipelines.methods.weak_vote import vote_examples
from training import losses as L


def loss(logp, logits, batch, ctx):
    """Eq. 3-5 (training.losses.bayesian_multi_weak_loss) on the raw scores, gamma as in Eq. 1,
    lambda_t the annealed KL weight."""
    return (L.bayesian_multi_weak_loss(logits, batch["weak_probs"], ctx.weak_weights, ctx.gamma, ctx.lam),
            {"gamma": ctx.gamma, "lambda_t": ctx.lam})


register(Method("bayes", "Bayesian multi-weak EDL loss (seed 003 Eq. 3-5, Appendix B KL)", vote_examples, loss=loss))
