"""Every W2S loss against values worked out by hand."""

import math

import pytest
import torch

from training import losses as L

LN2, LN3 = math.log(2), math.log(3)


def _logp(rows):
    return torch.log(torch.tensor(rows, dtype=torch.float64))


def test_cross_entropy_hard_and_weighted():
    logp = _logp([[0.5, 0.5], [0.25, 0.75]])
    # (-ln 0.5 - ln 0.75) / 2 = (0.693147 + 0.287682) / 2
    assert L.cross_entropy(logp, torch.tensor([0, 1])).item() == pytest.approx(0.4904146, abs=1e-6)
    # seed 001 Eq. 5 with S = (0.8, 0.2): (0.8 * 0.693147 + 0.2 * 0.287682) / 2 = 0.3060275
    w = torch.tensor([0.8, 0.2], dtype=torch.float64)
    assert L.cross_entropy(logp, torch.tensor([0, 1]), w).item() == pytest.approx(0.3060275, abs=1e-6)


def test_soft_cross_entropy():
    logp = _logp([[0.5, 0.5], [0.25, 0.75]])
    q = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    # row 0: ln 2 ; row 1: -(0.5 ln 0.25 + 0.5 ln 0.75) = 0.693147 + 0.143841 ; mean
    assert L.soft_cross_entropy(logp, q).item() == pytest.approx((LN2 + 0.8369882) / 2, abs=1e-6)


def test_gamma_warmup():
    # gamma_max 0.75 over the first 20% of 100 steps
    assert [L.gamma_at(s, 100, 0.75) for s in (0, 10, 20, 50)] == pytest.approx([0.0, 0.375, 0.75, 0.75])


def test_aux_confidence_loss():
    # strong predicts class 1 (0.75) while the weak label is 0, gamma 0.25:
    # 0.75 * -ln 0.25 + 0.25 * -ln 0.75 = 0.75 * 1.386294 + 0.25 * 0.287682 = 1.1116411
    logp = _logp([[0.25, 0.75]])
    assert L.aux_confidence_loss(logp, torch.tensor([0]), 0.25).item() == pytest.approx(1.1116411, abs=1e-6)
    assert L.aux_confidence_loss(logp, torch.tensor([0]), 0.0).item() == pytest.approx(math.log(4), abs=1e-9)
    # soft weak targets [0.5, 0.5]: 0.75 * (0.5*1.386294 + 0.5*0.287682) + 0.25 * 0.287682 = 0.6996617
    soft = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    assert L.aux_confidence_loss(logp, soft, 0.25).item() == pytest.approx(0.6996617, abs=1e-6)


def test_aux_confidence_self_label_has_no_gradient_path():
    logits = torch.tensor([[0.0, 1.0]], requires_grad=True)
    L.aux_confidence_loss(torch.log_softmax(logits, 1), torch.tensor([0]), 1.0).backward()
    p1 = torch.sigmoid(torch.tensor(1.0)).item()  # gamma 1: pure CE to its own class 1 -> grad p - onehot(1)
    assert logits.grad.tolist()[0] == pytest.approx([1 - p1, p1 - 1], abs=1e-6)


def test_naive_multi_weak_loss_eq2():
    # weak labels (0, 1, 1), weights (0.5, 0.25, 0.25); p = [0.25, 0.75]
    # 0.5 * 1.386294 + 0.25 * 0.287682 + 0.25 * 0.287682 = 0.8369882
    logp = _logp([[0.25, 0.75]])
    got = L.naive_multi_weak_loss(logp, torch.tensor([[0, 1, 1]]), torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))
    assert got.item() == pytest.approx(0.8369882, abs=1e-6)


def test_edl_nll_eq3_and_kl_appendix_b():
    alpha = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    # Eq. 3: log alpha_0 - log alpha_0-class = ln 3 - ln 2
    assert L.edl_nll(alpha, y).item() == pytest.approx(LN3 - LN2)
    # target class 0: alpha_tilde = [1, 1] = Dir(1) -> KL 0
    assert L.edl_kl_regulariser(alpha, y).item() == pytest.approx(0.0, abs=1e-12)
    # target class 1: alpha_tilde = [2, 1]; KL(Dir(2,1)||Dir(1,1)) = lnG(3) - lnG(2) - lnG(2) - lnG(1)
    #   + (2-1)(psi(2) - psi(3)) = ln 2 - 1/2 = 0.1931472
    y1 = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    assert L.edl_kl_regulariser(alpha, y1).item() == pytest.approx(LN2 - 0.5, abs=1e-9)
    assert L.edl_loss(alpha, y1, 0.5).item() == pytest.approx((LN3 - 0.0) + 0.5 * (LN2 - 0.5), abs=1e-9)


def test_edl_anneal():
    assert [L.edl_anneal(s, 10, 0.5) for s in (0, 5, 10, 30)] == [0.0, 0.25, 0.5, 0.5]


def test_bayesian_multi_weak_loss_eq4_eq5():
    # logits chosen so that softplus(logit) = evidence exactly: evidence (1, 0+) -> alpha ~ (2, 1)
    e1 = math.log(math.e - 1)  # softplus(e1) = 1
    logits = torch.tensor([[e1, -60.0]], dtype=torch.float64)
    alpha = L.dirichlet_alpha(logits)
    assert alpha.tolist()[0] == pytest.approx([2.0, 1.0], abs=1e-12)
    # two weak models, weights (0.5, 0.5), probabilities (0.8, 0.2) and (0.4, 0.6): mix = (0.6, 0.4)
    weak = torch.tensor([[[0.8, 0.2], [0.4, 0.6]]], dtype=torch.float64)
    w = torch.tensor([0.5, 0.5], dtype=torch.float64)
    lam = 0.5
    loss_e0 = LN3 - LN2  # KL 0
    loss_e1 = LN3 + lam * (LN2 - 0.5)
    weak_term = 0.6 * loss_e0 + 0.4 * loss_e1
    self_term = loss_e0  # the strong model's argmax is class 0
    for gamma in (0.0, 0.3):
        got = L.bayesian_multi_weak_loss(logits, weak, w, gamma, lam).item()
        assert got == pytest.approx((1 - gamma) * weak_term + gamma * self_term, abs=1e-9)


def test_bradley_terry_loss_by_hand():
    # -log sigma(1) = log(1 + e^-1) = 0.3132617; -log sigma(-2) = log(1 + e^2) = 2.1269280
    rc, rr = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    assert L.bradley_terry_loss(rc, rr).item() == pytest.approx(1.2200948, abs=1e-6)
    w = torch.tensor([1.0, 0.5])
    assert L.bradley_terry_loss(rc, rr, w).item() == pytest.approx((0.3132617 + 0.5 * 2.1269280) / 2, abs=1e-6)
    # K = 2 cross-entropy over [r_c, r_r] is the same loss
    logp = torch.log_softmax(torch.stack([rc, rr], 1), 1)
    assert L.cross_entropy(logp, torch.zeros(2)).item() == pytest.approx(1.2200948, abs=1e-6)


def test_cdpo_loss_eq12_by_hand():
    # row 1: h = 0.5 * ((-10 + 11) - (-12 + 11.5)) = 0.75; row 2: h = 0.5 * ((-5 + 5) - (-4 + 5)) = -0.5
    pc, pr = torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -4.0])
    rc, rr = torch.tensor([-11.0, -5.0]), torch.tensor([-11.5, -5.0])
    # eps 0 (Eq. 9): (log(1 + e^-0.75) + log(1 + e^0.5)) / 2 = (0.3868710 + 0.9740770) / 2
    assert L.cdpo_loss(pc, pr, rc, rr, beta=0.5, epsilon=0.0).item() == pytest.approx(0.6804740, abs=1e-6)
    # eps 0.1 (Eq. 12): -log sigma(-h) - (-log sigma(h)) = h, so the loss grows by eps * mean(h) = 0.0125
    assert L.cdpo_loss(pc, pr, rc, rr, beta=0.5, epsilon=0.1).item() == pytest.approx(0.6929740, abs=1e-6)


def test_sequence_cross_entropy_by_hand():
    """Two rows, vocabulary 2: p = softmax([0, ln 3]) = (1/4, 3/4) everywhere. Row 0 targets
    [1, 0] (both counted), row 1 targets [0, 1] with only the last counted:
    L = -(ln 3/4 + ln 1/4 + ln 3/4) / 3."""
    import math

    logp = torch.log_softmax(torch.tensor([0.0, math.log(3)]), -1).expand(2, 2, 2)
    mask = torch.tensor([[True, True], [False, True]])
    got = L.sequence_cross_entropy(logp, torch.tensor([[1, 0], [0, 1]]), mask)
    assert got.item() == pytest.approx(-(2 * math.log(0.75) + math.log(0.25)) / 3)
