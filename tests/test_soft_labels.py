"""Token-level soft labels across tokenizers (seed 003 section 4.2, Eq. 7-8, Fig. 2) against values
worked out by hand; real SmolLM2 / Gemma 3 tokenizers where the tokenization matters."""

import math

import pytest
import torch

from training import losses as L
from training import soft_labels as S

LN = math.log
TEXT = " Zürich dataloader ok"  # words split 3/1, 2/3 and 1/1 ways by the SmolLM2 / Gemma 3 tokenizers


@pytest.fixture(scope="module")
def toks():
    from actors.registry import load_tokenizer

    return {"llama": load_tokenizer("tiny:llama"), "gemma": load_tokenizer("tiny:gemma3")}


def _pieces(tok, text):
    ids, offs = S.token_offsets(tok, text)
    return tok.convert_ids_to_tokens(ids), offs


def test_tokens_map_to_words_by_character_offsets(toks):
    pieces, offs = _pieces(toks["llama"], TEXT)
    assert pieces == ["ĠZ", "Ã¼", "rich", "Ġdat", "aloader", "Ġok"]
    assert S.word_spans(TEXT) == [(1, 7), (8, 18), (19, 21)]
    assert S.token_words(offs, S.word_spans(TEXT)) == [0, 0, 0, 1, 1, 2]
    pieces, offs = _pieces(toks["gemma"], TEXT)
    assert pieces == ["▁Zürich", "▁dat", "alo", "ader", "▁ok"]
    assert S.token_words(offs, S.word_spans(TEXT)) == [0, 1, 1, 1, 2]
    # whitespace-only tokens go with the next word, trailing ones with the last word
    text = "hello  wonderful\nworld "
    for name, want in (("llama", [0, 1, 1, 2, 2, 2]), ("gemma", [0, 1, 1, 2, 2, 2])):
        _, offs = _pieces(toks[name], text)
        assert S.token_words(offs, S.word_spans(text)) == want
    assert S.token_words([(0, 1)], []) == [-1]  # no word at all


def test_a_token_crossing_words_merges_them():
    # "a b c": a tokenizer with one token for "a b" makes "a b" one unit for every tokenizer
    units = S.word_units("a b c", [[(0, 1), (1, 3), (3, 5)], [(0, 3), (3, 5)]])
    assert units == [(0, 3), (4, 5)]
    assert S.token_words([(0, 1), (1, 3), (3, 5)], units) == [0, 0, 1]


def test_stage1_word_scores_and_weighted_combination_by_hand(toks):
    _, g_offs = _pieces(toks["gemma"], TEXT)
    _, l_offs = _pieces(toks["llama"], TEXT)
    gemma_lp = [LN(0.5), LN(0.8), LN(0.5), LN(0.5), LN(0.9)]  # Zürich | dat alo ader | ok
    llama_lp = [LN(0.9), LN(0.9), LN(0.5), LN(0.6), LN(0.5), LN(0.7)]  # Z ü rich | dat aloader | ok
    units = S.word_spans(TEXT)
    g_words = S.word_logprobs(gemma_lp, S.token_words(g_offs, units), 3)
    l_words = S.word_logprobs(llama_lp, S.token_words(l_offs, units), 3)
    # Eq. 7: product of the wordpieces: gemma (0.5, 0.8*0.5*0.5, 0.9), llama (0.9*0.9*0.5, 0.6*0.5, 0.7)
    assert [math.exp(x) for x in g_words] == pytest.approx([0.5, 0.2, 0.9])
    assert [math.exp(x) for x in l_words] == pytest.approx([0.405, 0.3, 0.7])
    assert sum(g_words) == pytest.approx(sum(gemma_lp))  # the words' product is the sequence probability
    # lambda (1, 3) -> (0.25, 0.75): 0.125 + 0.30375, 0.05 + 0.225, 0.225 + 0.525
    comb = S.combine_word_logprobs([g_words, l_words], [1.0, 3.0])
    assert [math.exp(x) for x in comb] == pytest.approx([0.42875, 0.275, 0.75])
    # the per-example record for a SmolLM2 strong model, two weak models (Gemma, SmolLM2)
    rec = S.word_targets(TEXT, [g_offs, l_offs], [gemma_lp, llama_lp], l_offs, [1.0, 3.0])
    assert rec["token_word"] == [0, 0, 0, 1, 1, 2] and rec["words"] == [[1, 7], [8, 18], [19, 21]]
    assert rec["word_logp"] == pytest.approx(comb)


def _row(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_eq8_split_follows_strong_confidence_by_hand():
    # word 0: two strong tokens with C = (0.9, 0.5); word 1: one token, C = 0.7; then padding (-1)
    word_logp = _row([LN(0.5), LN(0.8)])
    token_word = torch.tensor([[0, 0, 1, -1]])
    conf = _row([0.9, 0.5, 0.7, 0.3])
    # Eq. 8 as printed: e^0.9 / (e^0.9 + e^0.5) = sigmoid(0.4) = 0.598688 of P(W) = 0.5
    p = S.split_word_scores(word_logp, token_word, conf, "eq8").exp()
    assert p[0].tolist() == pytest.approx([0.2993438, 0.2006562, 0.8, 1.0], abs=1e-6)
    assert (p[0, 0] + p[0, 1]).item() == pytest.approx(0.5)  # it keeps the sum, not the product
    # product split: exponents softmax(-C) = (0.401312, 0.598688): 0.5^0.401312, 0.5^0.598688
    p = S.split_word_scores(word_logp, token_word, conf, "product").exp()
    assert p[0].tolist() == pytest.approx([0.7571692, 0.6603544, 0.8, 1.0], abs=1e-6)
    assert (p[0, 0] * p[0, 1]).item() == pytest.approx(0.5)
    # equal confidences: an equal split (eq8: P(W)/2 each; product: sqrt P(W) each)
    even = _row([0.6, 0.6, 0.6, 0.6])
    assert S.split_word_scores(word_logp, token_word, even, "eq8").exp()[0, :2].tolist() == pytest.approx([0.25] * 2)
    assert S.split_word_scores(word_logp, token_word, even, "product").exp()[0, :2].tolist() == pytest.approx(
        [math.sqrt(0.5)] * 2)
    with pytest.raises(ValueError, match="split"):
        S.split_word_scores(word_logp, token_word, conf, "mean")


def test_split_conserves_each_word_across_tokenizers(toks):
    """Weak Gemma scores, strong SmolLM2 tokens: Zürich 1 -> 3 pieces, dataloader 3 -> 2, ok 1 -> 1.
    product: prod_k P(s_k) = P(W) (Eq. 7); eq8: sum_k P(s_k) = P(W) (Eq. 8 as printed)."""
    g_ids, g_offs = S.token_offsets(toks["gemma"], TEXT)
    l_ids, l_offs = S.token_offsets(toks["llama"], TEXT)
    rec = S.word_targets(TEXT, [g_offs], [[LN(0.5), LN(0.8), LN(0.5), LN(0.5), LN(0.9)]], l_offs, [1.0])
    assert [math.exp(x) for x in rec["word_logp"]] == pytest.approx([0.5, 0.2, 0.9])
    torch.manual_seed(0)
    logits = torch.randn(1, len(l_ids), len(toks["llama"]), dtype=torch.float64) * 4
    token_word, word_logp = torch.tensor([rec["token_word"]]), torch.tensor([rec["word_logp"]], dtype=torch.float64)
    conf = S.strong_confidence(logits)
    assert conf[0].tolist() == pytest.approx(logits[0].softmax(-1).max(-1).values.tolist())
    log_p = S.split_word_scores(word_logp, token_word, conf, "product")[0]
    for j, want in enumerate([0.5, 0.2, 0.9]):
        sel = token_word[0] == j
        assert log_p[sel].sum().exp().item() == pytest.approx(want, rel=1e-9)
        order = conf[0, sel].argsort()  # the more confident strong token gets the larger share
        assert bool((log_p[sel][order].diff() >= 0).all())
    p = S.split_word_scores(word_logp, token_word, conf, "eq8")[0].exp()
    for j, want in enumerate([0.5, 0.2, 0.9]):
        sel = token_word[0] == j
        assert p[sel].sum().item() == pytest.approx(want, rel=1e-9)
        assert bool((p[sel][conf[0, sel].argsort()].diff() >= 0).all())


def test_stage3_soft_target_by_hand():
    # strong p = (0.1, 0.2, 0.3, 0.4), reference token 3 with P(s) = 0.6: the other 0.4 follows p
    # over tokens 0-2: 0.4 * (1, 2, 3) / 6
    q = S.soft_targets(_row([LN(0.1), LN(0.2), LN(0.3), LN(0.4)]), torch.tensor([3]), _row(0.6))
    assert q[0].tolist() == pytest.approx([0.4 / 6, 0.8 / 6, 1.2 / 6, 0.6])


def test_ce_loss_by_hand_and_padding_ignored():
    # token 0: one-token word, P(W) = 0.6 -> q = (0.0667, 0.1333, 0.2, 0.6) against p = (0.1, 0.2, 0.3, 0.4):
    #   -sum q ln p = 0.0667*2.302585 + 0.1333*1.609438 + 0.2*1.203973 + 0.6*0.916291 = 1.1586664
    # token 1: padding (-1) with other logits: left out of the mean
    logits = torch.log(_row([0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1])).unsqueeze(0)
    args = (logits, torch.tensor([[3, 0]]), torch.tensor([[0, -1]]), _row([LN(0.6)]))
    assert S.token_soft_label_loss(*args).item() == pytest.approx(1.1586664, abs=1e-6)
    # Eq. 1 with gamma 0.5: 0.5 * 1.1586664 + 0.5 * -ln 0.4 (the strong model's own argmax, token 3)
    assert S.token_soft_label_loss(*args, gamma=0.5).item() == pytest.approx(1.0374786, abs=1e-6)
    # the loss pulls towards q: gradient p - q on the scored token, none on the padding
    z = logits.clone().requires_grad_(True)
    S.token_soft_label_loss(z, *args[1:]).backward()
    assert z.grad[0, 0].tolist() == pytest.approx([0.1 - 0.4 / 6, 0.2 - 0.8 / 6, 0.3 - 0.2, 0.4 - 0.6])
    assert z.grad[0, 1].tolist() == [0.0] * 4


def test_expected_kl_equals_the_per_class_appendix_b_kl():
    torch.manual_seed(0)
    alpha = L.dirichlet_alpha(torch.randn(3, 5, dtype=torch.float64) * 2)
    q = torch.rand(3, 5, dtype=torch.float64).softmax(-1)
    eye = torch.eye(5, dtype=torch.float64)
    loop = sum(q[:, k] * L.edl_kl_regulariser(alpha, eye[k].expand(3, 5)) for k in range(5))
    assert S.edl_expected_kl(alpha, q).tolist() == pytest.approx(loop.tolist(), rel=1e-9)


# alpha = softplus(z) + 1 = (3, 2): z = (ln(e^2 - 1), ln(e - 1)); reference token 0, P(W) = 0.75 -> q = (0.75, 0.25)
Z_EDL = torch.tensor([[[math.log(math.e ** 2 - 1), math.log(math.e - 1)]]], dtype=torch.float64)
# NLL = 0.75 (ln 5 - ln 3) + 0.25 (ln 5 - ln 2) = 0.6121919
# E[KL] = 0.75 KL(Dir(1, 2) || Dir(1, 1)) + 0.25 KL(Dir(3, 1) || Dir(1, 1)) = 0.75 (ln 2 - 1/2) + 0.25 (ln 3 - 2/3)
#       = 0.2528468
NLL, EKL = 0.6121919, 0.2528468


def _edl(z=Z_EDL, **kw):
    return S.token_soft_label_loss(z, torch.tensor([[0]]), torch.tensor([[0]]), _row([LN(0.75)]), loss="edl", **kw)


def test_edl_loss_kl_coefficient_by_hand():
    assert _edl(kl_coef=0.0).item() == pytest.approx(NLL, abs=1e-6)
    assert _edl(kl_coef=0.1).item() == pytest.approx(NLL + 0.1 * EKL, abs=1e-6)  # 0.6374766
    assert _edl(kl_coef=1.0).item() == pytest.approx(NLL + EKL, abs=1e-6)  # 0.8650387
    # the coefficient multiplies the annealed lambda_t of Appendix B
    assert _edl(kl_coef=0.5, lam=0.2).item() == pytest.approx(NLL + 0.1 * EKL, abs=1e-6)
    # Eq. 5 with gamma 0.5: the self term targets the argmax (token 0): (ln 5 - ln 3) + KL(Dir(1, 2)) = 0.7039730
    assert _edl(kl_coef=1.0, gamma=0.5).item() == pytest.approx(0.5 * (NLL + EKL) + 0.5 * 0.7039730, abs=1e-6)


def test_edl_clamp_bounds_each_token_and_stops_its_gradient():
    assert _edl(kl_coef=1.0, clamp_max=0.7).item() == pytest.approx(0.7)  # 0.865 clamped
    assert _edl(kl_coef=0.1, clamp_max=0.7).item() == pytest.approx(NLL + 0.1 * EKL, abs=1e-6)  # inside: unchanged
    # two tokens, the second an outlier (huge misleading evidence): only it is clamped, and it gets no gradient
    z = torch.cat([Z_EDL, torch.tensor([[[-10.0, 1e4]]], dtype=torch.float64)], 1).requires_grad_(True)
    args = (torch.tensor([[0, 0]]), torch.tensor([[0, 1]]), _row([LN(0.75), LN(0.75)]))
    loss = S.token_soft_label_loss(z, *args, loss="edl", kl_coef=0.1, clamp_max=5.0)
    assert loss.item() == pytest.approx((NLL + 0.1 * EKL + 5.0) / 2, abs=1e-6)
    loss.backward()
    assert z.grad[0, 1].tolist() == [0.0, 0.0] and z.grad[0, 0].abs().sum() > 0
    unclamped = S.token_soft_label_loss(z.detach(), *args, loss="edl", kl_coef=0.1)
    assert unclamped.item() > (NLL + 0.1 * EKL + 7.0) / 2  # the outlier alone is 7.52 unclamped
