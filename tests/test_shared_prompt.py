"""Shared-prompt option scoring (actors/packing.py): the packed path gives the K-sequence path's
option probabilities, scores, losses and gradients, in the backend and in the trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.backend import BackendConfig
from actors.hf_backend import HFBackend
from actors.packing import block_mask, pack_rows, supports_packing
from actors.prompts import TemplateConfig
from actors.registry import load_model
from training.examples import ground_truth_examples
from training.sft_config import TrainConfig
from training.sft_trainer import LossContext, TrainJob, collate, compute_loss, option_scores

# tolerance, fp32: the two paths run the same tokens in different batch shapes (summation order)
TOL = 2e-5


def test_pack_rows_layout_by_hand():
    """Row 0: prompt [5, 6], options [7] and [8, 9]; row 1: prompt [4], options [3, 2] and [1]."""
    p = pack_rows([[5, 6], [4]], [[[7], [8, 9]], [[3, 2], [1]]], pad_id=0)
    assert p["input_ids"].tolist() == [[5, 6, 7, 8, 9], [0, 4, 3, 2, 1]]
    assert p["position_ids"].tolist() == [[0, 1, 2, 2, 3], [0, 0, 1, 2, 1]]
    assert p["segment"].tolist() == [[0, 0, 1, 2, 2], [-1, 0, 1, 1, 2]]
    assert p["keep"] == 4  # 3 option tokens + the last prompt token, both rows
    # predictors, as indices into the last 4 positions (absolute index - 1)
    assert p["pred"].tolist() == [[[0, 0], [0, 2]], [[0, 1], [0, 0]]]
    assert p["cont_ids"].tolist() == [[[7, 0], [8, 9]], [[3, 2], [1, 0]]]
    assert p["cont_mask"].tolist() == [[[True, False], [True, True]], [[True, True], [True, False]]]
    m = block_mask(p["segment"], p["position_ids"], boolean=True)[:, 0]
    # row 0, token 8 (index 3, option 2) sees the prompt and itself, not option 1's token 7
    assert m[0, 3].tolist() == [True, True, False, True, False]
    assert m[0, 4].tolist() == [True, True, False, True, True]
    # row 1: the pad sees only itself; option 2's token 1 sees the prompt 4, not option 1
    assert m[1, 0].tolist() == [True, False, False, False, False]
    assert m[1, 4].tolist() == [False, True, False, False, True]
    w = block_mask(p["segment"], p["position_ids"], boolean=True, window=3)[:, 0]
    assert w[0, 4].tolist() == [False, True, False, True, True]  # positions 3 - 0 = 3 >= 3: cut


def _texts():
    # the first prompt is longer than tiny gemma3's sliding window (64), so the window matters
    long = "Question: " + " ".join(f"word{i}" for i in range(60)) + "?\nAnswer:"
    return ([long, "Q: sky colour?\nA:", "Q: 2 + 2?\nA:"],
            [[" blue", " a green sea", " red"], [" blue", " green"], [" four", " five", " twenty two", " 4"]])


@pytest.mark.parametrize("spec", ["tiny:llama:3", "tiny:gemma3:3"])
def test_backend_scores_match_k_sequences(spec):
    texts, answers = _texts()
    packed = HFBackend(spec, BackendConfig(dtype="float32", threads=1))
    assert supports_packing(packed.model)
    plain = HFBackend(spec, BackendConfig(dtype="float32", threads=1, shared_prompt=False))
    a, b = packed.score_texts(texts, answers), plain.score_texts(texts, answers)
    assert [len(x) for x in a] == [3, 2, 4]
    for x, y in zip(a, b):
        assert np.abs(x - y).max() < TOL, (x, y)
    # fewer tokens through the model: each prompt once
    assert packed.tokens_seen < plain.tokens_seen


def test_logit_cap_splits_micro_batches_same_scores(monkeypatch):
    """A micro-batch whose kept logits (rows x positions x vocabulary) exceed MAX_LOGIT_ELEMENTS is
    split: the same probabilities, more forward calls, no call above the cap (one row always runs)."""
    import actors.hf_backend as H

    texts, answers = _texts()
    b = HFBackend("tiny:llama:3", BackendConfig(dtype="float32", threads=1))
    want = b.score_texts(texts, answers)
    vocab = b.model.get_output_embeddings().weight.shape[0]
    calls = []
    real = H.pack_rows
    monkeypatch.setattr(H, "pack_rows", lambda p, o, pad: calls.append(len(p)) or real(p, o, pad))
    b.score_texts(texts, answers)
    assert calls == [3]  # one micro-batch without the cap
    calls.clear()
    # a cap of 5 positions of logits: one row per call
    monkeypatch.setattr(H, "MAX_LOGIT_ELEMENTS", vocab * 5)
    got = b.score_texts(texts, answers)
    assert len(calls) > 1 and max(calls) < 3
    for x, y in zip(got, want):
        assert np.abs(x - y).max() < TOL


def test_backend_bf16_close():
    """bf16 (the CPU default): the two paths agree to bf16 rounding."""
    texts, answers = _texts()
    a = HFBackend("tiny:llama:3", BackendConfig(dtype="bfloat16", threads=1)).score_texts(texts, answers)
    b = HFBackend("tiny:llama:3", BackendConfig(dtype="bfloat16", threads=1, shared_prompt=False)).score_texts(
        texts, answers)
    for x, y in zip(a, b):
        assert np.abs(x - y).max() < 2e-2


@pytest.mark.parametrize("spec", ["tiny:llama:5", "tiny:gemma3:5"])
@pytest.mark.parametrize("norm", ["options", "vocab"])
def test_trainer_loss_and_grads_match_k_sequences(spec, norm, tmp_path):
    texts, answers = _texts()
    rows = [{"id": f"r{i}", "prompt": t, "options": [o.strip() for o in a[:2]], "label": i % 2}
            for i, (t, a) in enumerate(zip(texts, answers))]
    tmpl = TemplateConfig(template="{prompt}", answer="text")
    ex = ground_truth_examples(rows, tmpl)
    job = TrainJob(name="t", spec=spec, out_dir=str(tmp_path), answer="text", examples=ex, num_options=2,
                   train=TrainConfig(engine="torch", max_steps=1, micro_batch=3, lm_normalize=norm))
    model, tok = load_model(spec, dtype=torch.float32)
    grads, outs = [], []
    for pack in (None, model):
        model.zero_grad()
        batch = collate(ex, tok, {}, job, "cpu", pack)
        assert ("segment" in batch) == (pack is not None)
        logp, logits = option_scores(model, batch, "lm", norm)
        loss, _ = compute_loss(None, logp, logits, batch, _ctx(job))
        loss.backward()
        outs.append((logp.detach(), logits.detach(), loss.item()))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    (lp_a, lg_a, l_a), (lp_b, lg_b, l_b) = outs
    assert torch.allclose(lp_a, lp_b, atol=TOL) and torch.allclose(lg_a, lg_b, atol=TOL)
    assert l_a == pytest.approx(l_b, abs=TOL)
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-3)


def _ctx(job):
    return LossContext(0, 1, job.train, torch.ones(1))


def test_logprobs_at_in_row_chunks_equals_one_log_softmax(monkeypatch):
    import actors.packing as P

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, 11, generator=g).to(torch.bfloat16)
    pos = torch.randint(0, 7, (5, 4), generator=g)
    ids = torch.randint(0, 11, (5, 4), generator=g)
    full = torch.log_softmax(logits.float(), -1)
    want = torch.stack([full[b, pos[b], ids[b]] for b in range(5)])
    monkeypatch.setattr(P, "LSM_CHUNK_ELEMENTS", 2 * 7 * 11)  # two rows per chunk: 3 chunks
    assert torch.equal(P.logprobs_at(logits, pos, ids), want)
