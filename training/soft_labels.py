"""Token-level soft labels across tokenizers (seed 003 section 4.2, Eq. 7-8, Fig. 2).

The weak models and the strong model tokenize the target text differently, so confidence goes
through words (whitespace-separated spans of the text, aligned by character offsets):

  Stage 1  word score from the weak wordpieces:  P_i(W) = prod_{w in W} p_i(w | x, y_<w)
           (Eq. 7, left side); with several weak models P(W) = sum_i lambda_i P_i(W) / sum_i lambda_i
           (our choice, the paper does not say: Eq. 6's weighted sum of probabilities, per word).
  Stage 2  split P(W) onto the strong tokens s_1..s_n of W by the strong confidence
           C_s(s_k) = max_v p_strong(v | x, y_<s_k)  (Eq. 8):
             split="product"  P(s_k) = P(W)^{v_k},  v_k = e^{-C_k} / sum_j e^{-C_j}   (default)
                              (prod_k P(s_k) = P(W), Eq. 7's right side, which the project's
                              issue requires; more confident tokens get larger targets, as
                              the paper's text asks)
             split="eq8"      P(s_k) = e^{C_k} / sum_j e^{C_j} * P(W)        (as printed;
                              sum_k P(s_k) = P(W), the product is NOT kept)
  Stage 3  soft label at step k: q = P(s_k) on the reference token s_k and 1 - P(s_k) spread over
           the other tokens in proportion to the strong distribution, softmax(logits, s_k masked).

A token belongs to the word holding its first non-whitespace character; whitespace-only tokens
go with the next word (the last word at the end). A token crossing words (one token for "a b")
merges those words into one unit for every tokenizer. The product of all word scores of one
model is then its whole sequence probability.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from training.losses import aux_confidence_loss, dirichlet_alpha, edl_loss, edl_nll

SPLITS = ("eq8", "product")
Span = tuple[int, int]


# ---- alignment (Python, per example) ----

def token_offsets(tok, text: str) -> tuple[list[int], list[Span]]:
    """Ids and character spans of `text` alone, no special tokens: the continuation ids that
    `encode_pairs` scores (fast tokenizers only)."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def word_spans(text: str) -> list[Span]:
    """Words: the whitespace-separated spans of the text (regex \\S+)."""
    return [m.span() for m in re.finditer(r"\S+", text)]


def _overlapping(span: Span, starts: list[int], ends: list[int]) -> range:
    """Indices of the (sorted, disjoint) words [starts, ends) sharing a character with span [a, b)."""
    return range(bisect.bisect_right(ends, span[0]), bisect.bisect_left(starts, span[1]))


def word_units(text: str, offsets: Sequence[Sequence[Span]]) -> list[Span]:
    """Word spans, with the words any token (of any tokenizer in `offsets`) crosses merged."""
    words = word_spans(text)
    starts, ends = [s for s, _ in words], [e for _, e in words]
    joined = [False] * max(len(words) - 1, 0)  # joined[j]: word j and j+1 are one unit
    for offs in offsets:
        for span in offs:
            for j in _overlapping(span, starts, ends)[:-1]:
                joined[j] = True
    units: list[Span] = []
    for j, (s, e) in enumerate(words):
        if j and joined[j - 1]:
            units[-1] = (units[-1][0], e)
        else:
            units.append((s, e))
    return units


def token_words(offsets: Sequence[Span], units: Sequence[Span]) -> list[int]:
    """Unit index per token: the unit its non-whitespace characters fall in; whitespace-only
    tokens take the next unit (the last one at the end); -1 when the text has no word."""
    starts, ends = [s for s, _ in units], [e for _, e in units]
    out = []
    for span in offsets:
        hit = _overlapping(span, starts, ends)
        out.append(hit[0] if hit else min(bisect.bisect_left(starts, span[1]), len(units) - 1))
    return out


def word_logprobs(token_logps: Sequence[float], token_word: Sequence[int], n_words: int) -> list[float]:
    """Stage 1 (Eq. 7): log P(W) = sum_{w in W} log p(w), the product of W's wordpiece probabilities."""
    out = [0.0] * n_words
    for lp, j in zip(token_logps, token_word):
        if j >= 0:
            out[j] += float(lp)
    return out


def combine_word_logprobs(per_model: Sequence[Sequence[float]], weights: Sequence[float]) -> list[float]:
    """log P(W) = log sum_i lambda_i P_i(W) / sum_i lambda_i over the weak models (Eq. 6's
    weighted sum, per word; one model: its own score). per_model [N][W]."""
    w = np.asarray(weights, dtype=np.float64)
    lp = np.asarray(per_model, dtype=np.float64).reshape(len(w), -1)
    if np.any(w < 0) or not np.any(w > 0):
        raise ValueError(f"weights must be >= 0 and not all 0, got {list(weights)}")
    terms = np.log(w[w > 0] / w.sum())[:, None] + lp[w > 0]
    top = terms.max(0)
    return (top + np.log(np.exp(terms - top).sum(0))).tolist()


def word_targets(text: str, weak_offsets: Sequence[Sequence[Span]], weak_token_logps: Sequence[Sequence[float]],
                 strong_offsets: Sequence[Span], weights: Sequence[float]) -> dict:
    """One target text's labels for the strong model (JSON-serialisable): per strong token its
    unit index (`token_word`), per unit the combined log P(W) (`word_logp`), the unit spans."""
    if len(weak_offsets) != len(weak_token_logps) or len(weak_offsets) != len(weights):
        raise ValueError("word_targets: one offsets list, one log-prob list and one weight per weak model")
    for offs, lps in zip(weak_offsets, weak_token_logps):
        if len(offs) != len(lps):
            raise ValueError(f"word_targets: {len(offs)} weak tokens but {len(lps)} log-probabilities")
    units = word_units(text, [*weak_offsets, strong_offsets])
    per_model = [word_logprobs(lps, token_words(offs, units), len(units))
                 for offs, lps in zip(weak_offsets, weak_token_logps)]
    word_logp = combine_word_logprobs(per_model, weights) if units else []
    return {"token_word": token_words(strong_offsets, units), "word_logp": word_logp,
            "words": [list(u) for u in units]}


def shifted_offsets(tok, prefix: str, text: str) -> list[Span]:
    """Spans of the tokens of `prefix + text` (the continuation a model scores, e.g. " " + text for
    a base model after "A:") in `text`'s coordinates; a leading-space token starts at 0."""
    _, offs = token_offsets(tok, prefix + text)
    k = len(prefix)
    return [(max(a - k, 0), max(b - k, 0)) for a, b in offs]


def target_word_labels(text: str, weak_toks: Sequence, weak_prefixes: Sequence[str],
                       weak_token_logps: Sequence[Sequence[float]], strong_tok, strong_prefix: str,
                       weights: Sequence[float]) -> dict:
    """`word_targets` for one target text scored by every weak model on `prefix + text` (the
    joint-decoding stage's token_logprobs) and learnt by the strong model on strong_prefix + text."""
    weak_offs = [shifted_offsets(t, p, text) for t, p in zip(weak_toks, weak_prefixes)]
    return word_targets(text, weak_offs, weak_token_logps, shifted_offsets(strong_tok, strong_prefix, text), weights)


# ---- strong side (torch, batched) ----

def _upcast(x: torch.Tensor) -> torch.Tensor:
    """bf16 / fp16 logits to fp32 (as the backends do); fp32 and fp64 stay."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def strong_confidence(logits: torch.Tensor) -> torch.Tensor:
    """C_s(s_k) = max_v p_strong(v | x, y_<s_k): the largest probability at each step (no gradient)."""
    return _upcast(logits.detach()).softmax(-1).amax(-1)


def _group_softmax(x: torch.Tensor, token_word: torch.Tensor, n_words: int) -> torch.Tensor:
    """softmax of x within each word: e^{x_k} / sum_{j in W(k)} e^{x_j}  (token_word -1: 0)."""
    b = x.shape[0]
    idx = token_word.clamp(min=0)
    valid = token_word >= 0
    top = torch.full((b, n_words), -torch.inf, dtype=x.dtype, device=x.device)
    top = top.scatter_reduce(1, idx, x.masked_fill(~valid, -torch.inf), "amax")
    e = (x - top.gather(1, idx)).exp().masked_fill(~valid, 0.0)
    den = torch.zeros((b, n_words), dtype=x.dtype, device=x.device).scatter_add(1, idx, e)
    return e / den.gather(1, idx).clamp(min=torch.finfo(x.dtype).tiny)


def split_word_scores(word_logp: torch.Tensor, token_word: torch.Tensor, confidence: torch.Tensor,
                      split: str = "product") -> torch.Tensor:
    """Stage 2, Eq. 8: log P(s_k) of each strong token from its word's log P(W) [B, W],
    token_word [B, T] (-1: not a target token) and the strong confidence C [B, T].
    eq8: P(s_k) = softmax_W(C)_k P(W);  product: P(s_k) = P(W)^{softmax_W(-C)_k}.
    Tokens with token_word -1 get log P = 0."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    c = confidence.to(word_logp.dtype)
    w_lp = word_logp.gather(1, token_word.clamp(min=0))
    if split == "eq8":
        out = _group_softmax(c, token_word, word_logp.shape[1]).log() + w_lp
    else:
        out = _group_softmax(-c, token_word, word_logp.shape[1]) * w_lp
    return out.masked_fill(token_word < 0, 0.0)


def soft_targets(logits: torch.Tensor, target_ids: torch.Tensor, p_target: torch.Tensor) -> torch.Tensor:
    """Stage 3: q = P(s_k) e_{s_k} + (1 - P(s_k)) softmax(logits with s_k masked): the reference
    token gets its split score, the rest of the mass follows the strong distribution (no gradient).
    logits [..., V], target_ids [...], p_target [...] -> q [..., V]."""
    z = _upcast(logits.detach())
    hit = F.one_hot(target_ids.long(), z.shape[-1]).bool()
    rest = z.masked_fill(hit, -torch.inf).softmax(-1)
    p = p_target.to(z.dtype).unsqueeze(-1)
    return torch.where(hit, p, (1 - p) * rest)


def edl_expected_kl(alpha: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """sum_k q_k KL(Dir(alpha~^(k)) || Dir(1)), alpha~^(k) = alpha with alpha_k set to 1 (the KL of
    Appendix B for the one-hot target e_k, weighted as in Eq. 4), in O(V) per row:
    KL_k = lnG(S_k) - lnG(V) - A + lnG(a_k) + B - (a_k - 1) psi(a_k) - psi(S_k)(S - V - a_k + 1),
    S = sum a, S_k = S - a_k + 1, A = sum lnG(a_j), B = sum (a_j - 1) psi(a_j)."""
    v = alpha.shape[-1]
    s = alpha.sum(-1, keepdim=True)
    a_sum = torch.lgamma(alpha).sum(-1, keepdim=True)
    b_sum = ((alpha - 1) * torch.digamma(alpha)).sum(-1, keepdim=True)
    s_k = s - alpha + 1
    kl = (torch.lgamma(s_k) - torch.lgamma(torch.tensor(float(v), dtype=alpha.dtype, device=alpha.device))
          - a_sum + torch.lgamma(alpha) + b_sum - (alpha - 1) * torch.digamma(alpha)
          - torch.digamma(s_k) * (s - v - alpha + 1))
    return (q * kl).sum(-1)


def token_edl_loss(logits: torch.Tensor, q: torch.Tensor, lam: float, kl_coef: float,
                   clamp_max: float | None) -> torch.Tensor:
    """Per token: min(L_NLL(alpha, q) + kl_coef * lam * E_q[KL], clamp_max), alpha = softplus(z) + 1.
    Eq. 3-4 with the soft label q (L_NLL is linear in y: sum_k q_k L_NLL(e_k) = L_NLL(q)); kl_coef
    is section 4.2's coefficient balancing the large KL of a vocabulary-sized Dirichlet against
    the NLL, lam the annealed lambda_t (Appendix B); the clamp bounds each token's loss."""
    alpha = dirichlet_alpha(logits)
    loss = edl_nll(alpha, q) + kl_coef * lam * edl_expected_kl(alpha, q)
    return loss if clamp_max is None else loss.clamp(max=clamp_max)


def token_soft_label_loss(logits: torch.Tensor, target_ids: torch.Tensor, token_word: torch.Tensor,
                          word_logp: torch.Tensor, *, loss: str = "ce", split: str = "product", gamma: float = 0.0,
                          lam: float = 1.0, kl_coef: float = 1.0, clamp_max: float | None = None) -> torch.Tensor:
    """Section 4.2 loss over the target tokens of a batch, mean over tokens with token_word >= 0.

    logits [B, T, V]: logits[b, t] predicts target_ids[b, t] (already shifted); token_word [B, T]
    unit index per strong token (-1: padding / not scored); word_logp [B, W] log P(W) per unit.
    Targets (no gradient): C = strong_confidence(logits), P(s_k) by Eq. 8 (`split`), q by Stage 3.
      loss="ce":  Eq. 1 per token, (1 - gamma) CE(p, q) + gamma CE(p, argmax p)  (aux_confidence_loss)
      loss="edl": Eq. 5 per token, (1 - gamma) L_EDL(alpha, q) + gamma L_EDL(alpha, argmax), each
                  term clamped at clamp_max, its KL weighted by kl_coef * lam (`token_edl_loss`).
    kl_coef and clamp_max act on the EDL loss only; the paper gives no values for them."""
    if loss not in ("ce", "edl"):
        raise ValueError(f"loss must be ce or edl, got {loss!r}")
    keep = token_word >= 0
    z = _upcast(logits)[keep]  # [n, V]: the scored tokens only
    if not len(z):
        return logits.sum() * 0.0
    conf = torch.zeros(token_word.shape, dtype=z.dtype, device=z.device)
    conf[keep] = strong_confidence(z)
    p_target = split_word_scores(word_logp.to(z.dtype), token_word, conf, split).exp()
    q = soft_targets(z, target_ids[keep], p_target[keep])
    if loss == "ce":
        return aux_confidence_loss(z.log_softmax(-1), q, gamma)
    weak = token_edl_loss(z, q, lam, kl_coef, clamp_max).mean()
    if not gamma:
        return weak
    self_label = F.one_hot(z.detach().argmax(-1), z.shape[-1]).to(z.dtype)
    self_term = edl_loss(dirichlet_alpha(z), self_label, kl_coef * lam)
    self_term = self_term if clamp_max is None else self_term.clamp(max=clamp_max)
    return (1 - gamma) * weak + gamma * self_term.mean()
