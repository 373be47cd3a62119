"""Model registry and the HF backend: tiny and real embedded models load and score."""

import json
import time

import pytest
import torch

from actors.backend import BackendConfig
from actors.embedded import EmbeddedError, verify_model_dir
from actors.hf_backend import HFBackend
from actors.registry import ModelSpecError, load_model, resolve


def _reference_option_probs(model, tok, text, labels):
    """Plain single-row forward with full-sequence logits, for comparison."""
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0, -1].float()
    label_ids = [tok.encode(lb, add_special_tokens=False)[0] for lb in labels]
    return torch.softmax(logits[label_ids], -1).numpy()


def test_tiny_loads_fast_and_is_seeded():
    load_model("tiny:llama:0")  # first call pays the one-time transformers imports
    t0 = time.time()
    m1, tok = load_model("tiny:llama:1")
    assert time.time() - t0 < 1.0
    m1b, _ = load_model("tiny:llama:1")
    m2, _ = load_model("tiny:llama:2")
    w = lambda m: m.model.layers[0].self_attn.q_proj.weight  # noqa: E731
    assert torch.equal(w(m1), w(m1b)) and not torch.equal(w(m1), w(m2))
    assert m1.config.vocab_size == len(tok) == 49152  # SmolLM2's real tokenizer
    clf, _ = load_model("tiny:llama", head="classifier", num_labels=3)
    assert clf.score.out_features == 3


def test_backend_scores_match_full_forward_and_ignore_batching():
    cfg = BackendConfig(dtype="float32", max_length=32, max_batch_tokens=64)  # forces several micro-batches
    b = HFBackend("tiny:llama:3", cfg)
    texts = ["Q: is the sky blue?\nA. no\nB. yes\nAnswer:", "Short?\nA. x\nB. y\nC. z\nAnswer:",
             "A much longer question that pads the batch a lot more than the others do\nA. a\nB. b\nAnswer:"]
    labels = [[" A", " B"], [" A", " B", " C"], [" A", " B"]]
    got = b.score_options(texts, labels)
    for text, labs, p in zip(texts, labels, got):
        ref = _reference_option_probs(b.model, b.tok, text, labs)
        assert p.sum() == pytest.approx(1.0) and p == pytest.approx(ref, abs=1e-5)
    alone = [b.score_options([t], [lb])[0] for t, lb in zip(texts, labels)]
    for a, g in zip(alone, got):
        assert a == pytest.approx(g, abs=1e-5)


def test_sequence_logprobs_match_manual_sum():
    b = HFBackend("tiny:llama:4", BackendConfig(dtype="float32"))
    prompts, conts = ["The capital of France is", "Hi"], [" Paris, of course.", " there"]
    got = b.sequence_logprobs(prompts, conts)
    for p, c, (lp, n) in zip(prompts, conts, got):
        pi = b.tok(p).input_ids
        ci = b.tok(c, add_special_tokens=False).input_ids
        ids = torch.tensor([pi + ci])
        with torch.no_grad():
            logp = torch.log_softmax(b.model(ids).logits[0].float(), -1)
        manual = sum(logp[len(pi) - 1 + j, t].item() for j, t in enumerate(ci))
        assert n == len(ci) and lp == pytest.approx(manual, abs=1e-4)


def test_real_embedded_model_loads_and_scores(smollm2_ready):
    b = HFBackend(smollm2_ready, BackendConfig(threads=2))
    assert b.info()["non_embedding_params"] > 100e6
    # hand-checked: SmolLM2-135M continues "The capital of France is" with " Paris"
    (paris, _), (london, _) = b.sequence_logprobs(["The capital of France is"] * 2, [" Paris", " London"])
    assert paris > london + 2.0
    text = "Question: What is the capital of France?\nA. London\nB. Paris\nAnswer:"
    p = b.score_options([text], [[" A", " B"]])[0]
    ref = _reference_option_probs(b.model.float(), b.tok, text, [" A", " B"])
    assert p == pytest.approx(ref, abs=0.03)  # bf16 backend vs fp32 reference


@pytest.mark.parametrize("spec,message", [
    ("", "non-empty"),
    ("foo:bar", "unknown model spec scheme"),
    ("embedded:nope", "unknown embedded model 'nope'"),
    ("tiny:gpt9", "bad tiny spec"),
    ("tiny:llama:x", "bad tiny spec"),
    ("/no/such/dir", "does not exist"),
])
def test_unknown_specs(spec, message):
    with pytest.raises(ModelSpecError, match=message):
        resolve(spec)


def test_unreachable_hub_id_is_a_clear_error():
    with pytest.raises(ModelSpecError, match="hub is unreachable or has no such model"):
        load_model("some-org/not-a-model")


def test_local_directory_roundtrip(tmp_path):
    m, tok = load_model("tiny:llama:5")
    m.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m2, _ = load_model(str(tmp_path))
    assert torch.equal(m.lm_head.weight, m2.lm_head.weight)
    (tmp_path / "config.json").unlink()
    with pytest.raises(ModelSpecError, match="no config.json"):
        resolve(str(tmp_path))


def test_bad_checksum_and_missing_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("W2S_CACHE", str(tmp_path))
    with pytest.raises(EmbeddedError, match="not set up"):
        load_model("embedded:all-minilm-l6-v2", head="encoder")
    d = tmp_path / "models" / "all-minilm-l6-v2"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"corrupted")
    (d / "w2s_manifest.json").write_text(json.dumps({"files": {"model.safetensors": "0" * 64}}))
    with pytest.raises(EmbeddedError, match="bad checksum"):
        verify_model_dir(d, "all-minilm-l6-v2")
    with pytest.raises(EmbeddedError, match="bad checksum"):
        load_model("embedded:all-minilm-l6-v2", head="encoder")


def test_generate_greedy_matches_manual_decoding_and_samples_are_seeded():
    b = HFBackend("tiny:llama:6", BackendConfig(dtype="float32"))
    prompts = ["Once upon a time", "The weak model said"]
    out = b.generate(prompts, max_new_tokens=6)
    for prompt, [(text, lp)] in zip(prompts, out):
        ids = b.tok(prompt, return_tensors="pt").input_ids
        total, new = 0.0, []
        with torch.no_grad():
            for _ in range(6):
                logp = torch.log_softmax(b.model(ids).logits[0, -1].float(), -1)
                nxt = int(logp.argmax())
                total += float(logp[nxt])
                new.append(nxt)
                if nxt == b.tok.eos_token_id:
                    break
                ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
        assert text == b.tok.decode(new, skip_special_tokens=True)
        assert lp == pytest.approx(total, abs=1e-4)
    s1 = b.generate(prompts, num_samples=3, max_new_tokens=5, temperature=1.0, seed=7)
    assert [len(x) for x in s1] == [3, 3] and s1 == b.generate(prompts, num_samples=3, max_new_tokens=5,
                                                                temperature=1.0, seed=7)
    with pytest.raises(ValueError, match="greedy decoding gives one sequence"):
        b.generate(prompts, num_samples=2)


def test_embedded_tokenizers_add_bos_as_their_gguf_files_say():
    """Gemma 3's GGUF file says tokenizer.ggml.add_bos_token: true, SmolLM2's false. transformers
    5.19 dropped the flag when converting, and Gemma 3 without BOS fell to near-chance answers
    (LM loss 6.4 vs 2.3 on plain English; docs/measurements.md): `w2s setup` restores it."""
    from actors.registry import load_tokenizer

    gemma, smol = load_tokenizer("embedded:gemma3-270m"), load_tokenizer("embedded:smollm2-135m-instruct")
    plain = gemma("The capital of France is", add_special_tokens=False).input_ids
    assert gemma("The capital of France is").input_ids == [gemma.bos_token_id] + plain and gemma.bos_token_id == 2
    assert smol("The capital of France is").input_ids == smol("The capital of France is", add_special_tokens=False).input_ids


def test_a_gguf_model_converted_by_an_older_w2s_asks_for_setup(tmp_path):
    d = tmp_path / "gemma3-270m"
    d.mkdir()
    (d / "w2s_manifest.json").write_text(json.dumps({"files": {}}))  # no "convert": before the BOS fix
    with pytest.raises(EmbeddedError, match="converted by an older w2s.*re-run `w2s setup`"):
        verify_model_dir(d, "gemma3-270m")
    (d / "w2s_manifest.json").write_text(json.dumps({"files": {}, "convert": 2}))
    verify_model_dir(d, "gemma3-270m")
