"""Sequence training (generation tasks): SFT on target texts and token-level soft labels in the
trainer's loop (fit_local, fp32, a tiny random model). The first step's loss is recomputed here
independently; with every word certain (P(W) = 1) the soft labels are one-hot and their CE loss
equals the SFT loss; training moves the parameters."""

import math

import pytest
import torch

from actors.registry import load_model
from training.examples import sequence_examples
from training.soft_labels import target_word_labels
from training.sft_config import TrainConfig
from training.sft_trainer import TrainJob, fit_local, read_history

SPEC = "tiny:llama:3"
ROWS = [{"id": f"r{i}", "prompt": f"Q: what is {i} plus {i}?\nA:", "target": f"it is {2 * i} of course",
         "weak_top": [f"maybe {i}"], "reference": f"{2 * i}"} for i in range(4)]


def _train(tmp_path, method, examples, **kw):
    cfg = TrainConfig(engine="torch", lr=1e-2, max_steps=2, micro_batch=4, max_length=64, precision="fp32",
                      lr_schedule="constant", checkpoint_at_end=False, gamma_max=0.0, **kw)
    from pipelines import methods

    loss = methods.METHODS[method].loss if method in methods.METHODS else None  # SFT for ground_truth
    job = TrainJob(name=method, spec=SPEC, out_dir=str(tmp_path / method), train=cfg, examples=examples,
                   method=method, answer="sequence", loss=loss)
    fit_local(job, lambda m: None)
    return read_history(tmp_path / method)


def _target_logits(model, tok, e) -> tuple[torch.Tensor, list[int]]:
    """Logits at the target positions of one example (one unpadded forward) and the target ids."""
    p = tok(e["text"])["input_ids"]
    c = tok(e["response"], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return model(torch.tensor([p + c])).logits[0, len(p) - 1:len(p) - 1 + len(c)].double(), c


def _sft_loss_by_hand(examples) -> float:
    model, tok = load_model(SPEC)
    nll, n = 0.0, 0
    for e in examples:
        z, c = _target_logits(model, tok, e)
        logp = z.log_softmax(-1)
        nll -= sum(logp[j, t].item() for j, t in enumerate(c))
        n += len(c)
    return nll / n


def test_targets_per_method():
    assert [e["response"] for e in sequence_examples(ROWS, "joint")] == [" " + r["target"] for r in ROWS]
    assert [e["response"] for e in sequence_examples(ROWS, "top_beam")] == [" " + r["weak_top"][0] for r in ROWS]
    assert [e["response"] for e in sequence_examples(ROWS, "ground_truth")] == [" " + r["reference"] for r in ROWS]
    with pytest.raises(ValueError, match="no row has a target"):
        sequence_examples([dict(ROWS[0], target=None)], "joint")
    with pytest.raises(ValueError, match="strong.methods"):
        sequence_examples(ROWS, "naive")


def test_sft_first_loss_is_the_token_mean_nll(tmp_path):
    ex = sequence_examples(ROWS, "joint")
    hist = _train(tmp_path, "joint", ex)
    assert hist[0]["loss"] == pytest.approx(_sft_loss_by_hand(ex), rel=1e-4)
    assert hist[1]["loss"] < hist[0]["loss"]


def _soft_examples(word_logp: float):
    _, tok = load_model(SPEC)
    rows = []
    for r in ROWS:
        n = len(tok(" " + r["target"], add_special_tokens=False)["input_ids"])
        rows.append(dict(r, target_token_logps=[[word_logp / n] * n]))  # one weak model, same tokenizer
    soft = {"weak_toks": [tok], "weak_prefixes": [" "], "weights": [1.0], "strong_tok": tok}
    return sequence_examples(rows, "soft_tokens", soft=soft)


def _soft_ce_by_hand(examples) -> float:
    """Section 4.2 by hand: C_k = max_v p(v), P(s_k) = P(W)^(softmax_W(-C)_k) (the product split),
    q = P(s_k) on the target, 1 - P(s_k) over the rest in proportion to p; CE(p, q) per token."""
    model, tok = load_model(SPEC)
    total, n = 0.0, 0
    for e in examples:
        z, c = _target_logits(model, tok, e)
        lp = z.log_softmax(-1)
        conf = lp.exp().max(-1).values
        tw = torch.tensor(e["token_word"][:len(c)])
        for j, (k, t) in enumerate(zip(tw.tolist(), c)):
            group = (tw == k).nonzero().flatten()
            v = torch.softmax(-conf[group], 0)[(group == j).nonzero().item()]
            p_t = math.exp(e["word_logp"][k] * v.item())
            rest = z[j].clone()
            rest[t] = -math.inf
            rest = rest.softmax(-1)
            total += -p_t * lp[j, t].item() - (1 - p_t) * (rest * lp[j]).nansum().item()
            n += 1
    return total / n


def test_certain_words_give_the_sft_loss(tmp_path):
    ex = _soft_examples(0.0)
    # 4 words "it is 2i of course" -> 5 words; each strong token mapped to one
    assert all(len(e["word_logp"]) == 5 and e["word_logp"] == [0.0] * 5 for e in ex)
    hist = _train(tmp_path, "soft_tokens", ex, soft_loss="ce")
    assert hist[0]["loss"] == pytest.approx(_sft_loss_by_hand(ex), rel=1e-4)


def test_uncertain_words_lower_the_target_mass(tmp_path):
    """P(W) < 1 moves target mass to the rest of the vocabulary: the CE against q differs from SFT,
    and the EDL variant with KL coefficient and clamp trains (loss finite, parameters move)."""
    ex = _soft_examples(math.log(0.25))
    assert all(sum(e["word_logp"]) == pytest.approx(math.log(0.25)) for e in ex)  # product of words = sequence
    ce = _train(tmp_path, "soft_tokens", ex, soft_loss="ce")
    assert ce[0]["loss"] == pytest.approx(_soft_ce_by_hand(ex), rel=1e-4)
    edl_dir = tmp_path / "edl"
    edl = _train(edl_dir, "soft_tokens", ex, soft_loss="edl", soft_kl_coef=0.01, soft_clamp_max=50.0)
    assert all(math.isfinite(h["loss"]) and h["loss"] <= 50.0 for h in edl)
    base, _ = load_model(SPEC)
    trained, _ = load_model(str(edl_dir / "soft_tokens" / "model"))
    assert any(not torch.equal(a, b) for a, b in zip(base.state_dict().values(), trained.state_dict().values()))


def test_word_labels_follow_the_weak_tokens():
    """Two weak 'tokenizers' (the same one with different prefixes) and hand log-probs: each word's
    log P(W) is the weighted mixture of its wordpieces' products."""
    _, tok = load_model(SPEC)
    text = "it is 4"
    n0 = len(tok(" " + text, add_special_tokens=False)["input_ids"])
    n1 = len(tok(text, add_special_tokens=False)["input_ids"])
    labels = target_word_labels(text, [tok, tok], [" ", ""], [[-1.0] * n0, [-2.0] * n1], tok, " ", [1.0, 1.0])
    assert len(labels["word_logp"]) == 3 and len(labels["token_word"]) == n0
    assert labels["token_word"] == sorted(labels["token_word"]) and set(labels["token_word"]) == {0, 1, 2}
    assert sum(labels["word_logp"]) <= 0
