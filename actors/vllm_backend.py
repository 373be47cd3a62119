"""vLLM backend (optional extra `w2s[vllm]`, GPU clusters): option scoring, prompt log-probabilities,
generation.

Prompts are tokenized with the same code as the HF backend (`encode_prompts`) and passed as token
ids, so both backends score the same tokens. Option scoring asks for one generated token with
`allowed_token_ids` = the option labels and `logprobs_mode="processed_logprobs"`, so the returned
log-probabilities are already renormalised over the K labels (one forward pass per row).
Teacher-forced log-probabilities use `prompt_logprobs=0` (the actual token's log-probability).

Select it per model with `backend.kind=vllm`. It is imported only when asked for.
"""

from __future__ import annotations

import math
import tempfile

import numpy as np

from actors.backend import BackendConfig, ModelBackend, encode_pairs, encode_prompts, label_token_ids
from actors.registry import load_model, load_tokenizer, resolve


class VLLMBackend(ModelBackend):
    def __init__(self, spec: str, cfg: BackendConfig):
        from vllm import LLM

        self.spec, self.cfg = spec, cfg
        src = resolve(spec)
        path = src.path
        if src.kind == "tiny":  # vLLM loads directories: write the random model out once
            model, tok = load_model(spec)
            self._tmp = tempfile.TemporaryDirectory(prefix="w2s-vllm-")
            model.save_pretrained(self._tmp.name)
            tok.save_pretrained(self._tmp.name)
            path = self._tmp.name
        dtype = "auto" if cfg.dtype == "auto" else cfg.dtype
        self.llm = LLM(model=path, tokenizer=path, dtype=dtype, max_model_len=cfg.max_length,
                       gpu_memory_utilization=cfg.gpu_memory_utilization, logprobs_mode="processed_logprobs",
                       enable_prefix_caching=True, seed=0)
        self.tok = load_tokenizer(spec)
        self._label_cache: dict[str, int] = {}
        self.tokens_seen = 0

    def info(self) -> dict:
        return {"spec": self.spec, "device": "vllm", "dtype": self.cfg.dtype, "engine": "vllm"}

    def _prompts(self, seqs: list[list[int]]):
        from vllm.inputs import TokensPrompt

        self.tokens_seen += sum(len(s) for s in seqs)
        return [TokensPrompt(prompt_token_ids=s) for s in seqs]

    def score_options(self, texts: list[str], labels: list[list[str]], chat: bool = False) -> list[np.ndarray]:
        from vllm import SamplingParams

        label_ids = [label_token_ids(self.tok, row, self._label_cache) for row in labels]
        seqs = encode_prompts(self.tok, texts, chat, self.cfg.max_length - 1, self.spec)
        params = [SamplingParams(max_tokens=1, temperature=0.0, logprobs=len(ids), allowed_token_ids=ids)
                  for ids in label_ids]
        outs = self.llm.generate(self._prompts(seqs), params, use_tqdm=False)
        result = []
        for out, ids in zip(outs, label_ids):
            step = out.outputs[0].logprobs[0]  # token id -> Logprob, over the allowed labels only
            lp = np.array([step[t].logprob if t in step else -math.inf for t in ids], dtype=np.float64)
            p = np.exp(lp - lp.max())
            result.append(p / p.sum())
        return result

    def generate(self, prompts: list[str], num_samples: int = 1, max_new_tokens: int = 64,
                 temperature: float = 0.0, seed: int = 0, chat: bool = False) -> list[list[tuple[str, float]]]:
        from vllm import SamplingParams

        if temperature == 0 and num_samples > 1:
            raise ValueError("generate: greedy decoding gives one sequence; use temperature > 0 for samples")
        seqs = encode_prompts(self.tok, prompts, chat, self.cfg.max_length - max_new_tokens, self.spec)
        # logprobs=0: vLLM accumulates the chosen tokens' log-probabilities (cumulative_logprob)
        params = SamplingParams(n=num_samples, temperature=temperature, max_tokens=max_new_tokens, seed=seed,
                                logprobs=0, skip_special_tokens=True)
        outs = self.llm.generate(self._prompts(seqs), params, use_tqdm=False)
        return [[(c.text, float(c.cumulative_logprob or 0.0)) for c in out.outputs] for out in outs]

    def sequence_logprobs(self, prompts: list[str], continuations: list[str],
                          chat: bool = False) -> list[tuple[float, int]]:
        from vllm import SamplingParams

        # vLLM needs one slot past the prompt for the token it must generate
        seqs, conts = encode_pairs(self.tok, prompts, continuations, chat, self.cfg.max_length - 1, self.spec)
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outs = self.llm.generate(self._prompts(seqs), params, use_tqdm=False)
        result = []
        for out, seq, n in zip(outs, seqs, conts):
            plp = out.prompt_logprobs  # position t: {actual token at t: Logprob}, None at t = 0
            total = sum(plp[t][seq[t]].logprob for t in range(len(seq) - n, len(seq)))
            result.append((float(total), n))
        return result
