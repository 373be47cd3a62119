"""Weak-to-strong training losses: small pure functions over per-option scores of a batch.

Shapes: B rows, K options, N weak models. `logp` [B, K] are log-probabilities of the options
(the option-choice head decides how they are normalised); `logits` [B, K] are raw scores (EDL).
Every loss returns a scalar: the mean over the batch of the per-row loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logp: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Hard labels: (1/B) sum_b w_b * -log p(y_b | x_b)   (w_b = 1 unless given).

    With the generative head this is the CLM loss of seed 001 Eq. 1 / seed 000 Eq. 6 for a
    one-token answer; with w_b = S_prob(x_i, a_i) it is the re-weighted loss of seed 001 Eq. 5,
    L_rew = (1/N) sum_i S_prob(x_i, a_i) L_CLM(x_i, a_i).
    """
    nll = -logp.gather(1, target.long().unsqueeze(1)).squeeze(1)
    if weight is not None:
        nll = nll * weight
    return nll.mean()


def sequence_cross_entropy(token_logp: torch.Tensor, target_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Supervised fine-tuning on a target sequence (seed 003 section 4.1: the strong model learns
    the joint-decoding target; the ceiling learns the reference):
        L = -(1 / sum_b |y_b|) sum_b sum_t log p(y_b,t | x_b, y_b,<t),
    the token-mean over the batch. token_logp [B, T, V] (position t predicts target_ids[:, t]),
    mask [B, T] marks the target tokens."""
    lp = token_logp.gather(-1, target_ids.long().unsqueeze(-1)).squeeze(-1)
    m = mask.to(lp.dtype)
    return -(lp * m).sum() / m.sum().clamp(min=1)


def soft_cross_entropy(logp: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Soft labels: (1/B) sum_b -sum_k q_bk log p_bk, with q the weak models' probabilities."""
    return -(probs * logp).sum(1).mean()


def gamma_at(step: int, total_steps: int, gamma_max: float, warmup_frac: float = 0.2) -> float:
    """The auxiliary weight gamma grows linearly from 0 to gamma_max over the first
    warmup_frac of training, then stays there (seed 003 section 3.1; Burns et al.)."""
    warm = max(warmup_frac * total_steps, 1e-9)
    return gamma_max * min(1.0, step / warm)


def aux_confidence_loss(logp: torch.Tensor, weak_target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Seed 003 Eq. 1: L = (1 - gamma) CE(f(x), y_w) + gamma CE(f(x), f_hat(x)).

    f_hat(x) is the strong model's own predicted class (argmax, no gradient through it).
    weak_target: hard labels [B] or weak probabilities [B, K].
    """
    weak = (cross_entropy(logp, weak_target) if weak_target.dim() == 1
            else soft_cross_entropy(logp, weak_target))
    self_label = logp.detach().argmax(1)
    return (1 - gamma) * weak + gamma * cross_entropy(logp, self_label)


def naive_multi_weak_loss(logp: torch.Tensor, weak_labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Seed 003 Eq. 2: L_Naive = sum_i w_i CE(f(x), y_w^(i)); weak_labels [B, N], weights [N]."""
    nll = -logp.gather(1, weak_labels.long())  # [B, N]: -log p(y^(i) | x)
    return (nll * weights.unsqueeze(0)).sum(1).mean()


def explicit_conflict_loss(logp: torch.Tensor, weak_target: torch.Tensor, truth: torch.Tensor,
                           alpha: float) -> torch.Tensor:
    """Seed 002, "Weak-to-Strong Deception", explicit conflict (harmlessness and harmfulness):

        L = E_x [ CE(M(x), y_w) + alpha * CE(M(x), 0) * I{M(x) < 0.5} ],

    M(x) = p(truth | x), the probability the strong model gives the right option among the K
    (logp renormalised over the options, so a head normalised over the vocabulary gives the same
    M as one normalised over the options), and CE(M(x), 0) = -log(1 - M(x)): on rows the model
    already gets wrong it is pushed further from the right answer, while the weak label is fitted
    everywhere. The indicator carries no gradient; 1 - M(x) is clamped at 1e-6 (M(x) < 0.5
    wherever the term is on, so it never binds).
    """
    m = logp.softmax(1).gather(1, truth.long().unsqueeze(1)).squeeze(1)
    on = (m.detach() < 0.5).to(logp.dtype)
    conflict = -torch.log((1 - m).clamp(min=1e-6)) * on
    return cross_entropy(logp, weak_target) + alpha * conflict.mean()


def dirichlet_alpha(logits: torch.Tensor) -> torch.Tensor:
    """The strong model predicts Dirichlet parameters alpha = evidence + 1, evidence = softplus(logits)."""
    return F.softplus(logits) + 1.0


def edl_nll(alpha: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Seed 003 Eq. 3, per row: L_NLL = sum_k y_k (log alpha_0 - log alpha_k), alpha_0 = sum_k alpha_k.
    y: one-hot (or any weights over classes) [B, K]."""
    alpha0 = alpha.sum(1, keepdim=True)
    return (y * (alpha0.log() - alpha.log())).sum(1)


def edl_kl_regulariser(alpha: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Seed 003 Appendix B, per row: KL(Dir(pi | alpha_tilde) || Dir(pi | 1)) with
    alpha_tilde = y + (1 - y) * alpha (the target class's evidence removed). Closed form:
    lnG(S) - lnG(K) - sum_k lnG(a_k) + sum_k (a_k - 1)(psi(a_k) - psi(S)),  S = sum_k a_k."""
    a = y + (1 - y) * alpha
    s = a.sum(1)
    k = torch.tensor(float(a.shape[1]), dtype=a.dtype, device=a.device)
    return (torch.lgamma(s) - torch.lgamma(k) - torch.lgamma(a).sum(1)
            + ((a - 1) * (torch.digamma(a) - torch.digamma(s).unsqueeze(1))).sum(1))


def edl_anneal(step: int, anneal_steps: int, lambda_edl: float = 1.0) -> float:
    """lambda_t of Appendix B: grows with the training step, lambda_edl * min(1, step / anneal_steps)
    (Sensoy et al. use min(1, epoch / 10))."""
    return lambda_edl * min(1.0, step / max(anneal_steps, 1))


def edl_loss(alpha: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """Per row: L_EDL = L_NLL + lambda_t KL(Dir(alpha_tilde) || Dir(1))."""
    return edl_nll(alpha, y) + lam * edl_kl_regulariser(alpha, y)


def bayesian_multi_weak_loss(logits: torch.Tensor, weak_probs: torch.Tensor, weights: torch.Tensor,
                             gamma: float, lam: float) -> torch.Tensor:
    """Seed 003 Eq. 4-5.

    Eq. 4: L_EDL(f(x), {y_w^(i)}) = sum_i w_i sum_k p_k^(i) L_EDL(f(x), e_k): each weak model's
    probability p_k^(i) of class k weighs the EDL loss of the one-hot target e_k (the text's
    reading: "the EDL loss for each class is calculated based on the predicted probability
    assignment for each weak model and then combined in the same way as in Eqn. (2)").
    Eq. 5: L = (1 - gamma) L_EDL(weak) + gamma L_EDL(f(x), f_hat(x)), f_hat the strong model's argmax.
    weak_probs [B, N, K], weights [N].
    """
    alpha = dirichlet_alpha(logits)
    b, k = logits.shape
    eye = torch.eye(k, dtype=logits.dtype, device=logits.device)
    # per row and class k: L_EDL(alpha, e_k)  -> [B, K]
    per_class = torch.stack([edl_loss(alpha, eye[c].expand(b, k), lam) for c in range(k)], 1)
    mix = (weak_probs * weights.view(1, -1, 1)).sum(1)  # sum_i w_i p^(i)  [B, K]
    weak_term = (mix * per_class).sum(1).mean()
    self_target = F.one_hot(alpha.detach().argmax(1), k).to(logits.dtype)
    self_term = edl_loss(alpha, self_target, lam).mean()
    return (1 - gamma) * weak_term + gamma * self_term


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """Scalar reward model on preference pairs (Bradley-Terry):
    L = (1/B) sum_b w_b * -log sigma(r(x_b, y_c) - r(x_b, y_r)),  w_b = 1 unless given
    (the weak ensemble's confidence or the reliability score of the pair's weak label).
    For K = 2 it equals cross-entropy over the logits [r_c, r_r] with the chosen one as target.
    """
    nll = -F.logsigmoid(r_chosen - r_rejected)
    if weight is not None:
        nll = nll * weight
    return nll.mean()


def cdpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
              ref_rejected: torch.Tensor, beta: float, epsilon: float = 0.0) -> torch.Tensor:
    """Conservative DPO, seed 003 Eq. 12 over Eq. 9 (Mitchell's cDPO; epsilon = 0 gives DPO):
    h = beta * [(log f(y_c) - log f_ref(y_c)) - (log f(y_r) - log f_ref(y_r))]
    L = (1/B) sum_b (1 - eps) * -log sigma(h_b) + eps * -log sigma(-h_b).
    Arguments are summed sequence log-probabilities [B] of the policy and the reference model.
    """
    h = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return ((1 - epsilon) * -F.logsigmoid(h) + epsilon * -F.logsigmoid(-h)).mean()
