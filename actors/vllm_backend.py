"""vLLM backend (optional extra `w2s[vllm]`, GPU clusters): option scoring, prompt log-probabilities,
generation.

Prompts are tokenized with the same code as the HF backend (`encode_prompts`) and passed as token
ids, so both backends score the same tokens. Option scoring asks for one generated token with
`allowed_token_ids` = the option labels and `logprobs_mode="processed_logprobs"`, so the returned
log-probabilities are already renormalised over the K labels (one forward pass per row).
Teacher-forced log-probabilities use `prompt_logprobs=0` (the actual token's log-probability).
Beam search is vLLM's own `LLM.beam_search` (length_penalty 0: beams ranked by summed log-prob).

Select it per model with `backend.kind=vllm`. It is imported only when asked for.
"""

from __future__ import annotations

import math
import tempfile

import numpy as np

from actors.backend import (BackendConfig, ModelBackend, apply_stop, check_stop, encode_pairs, encode_prompts,
                            label_token_ids)
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
                 temperature: float = 0.0, seed: int = 0, chat: bool = False,
                 stop: list[str] | None = None) -> list[list[tuple[str, float]]]:
        """See ModelBackend.generate. vLLM ends a row at the token completing a stop string
        (SamplingParams.stop); text and log-probability are then cut by `apply_stop`, as in HF."""
        from vllm import SamplingParams

        if temperature == 0 and num_samples > 1:
            raise ValueError("generate: greedy decoding gives one sequence; use temperature > 0 for samples")
        stop = check_stop(stop)
        seqs = encode_prompts(self.tok, prompts, chat, self.cfg.max_length - max_new_tokens, self.spec)
        # logprobs=0: vLLM accumulates the chosen tokens' log-probabilities (cumulative_logprob)
        params = SamplingParams(n=num_samples, temperature=temperature, max_tokens=max_new_tokens, seed=seed,
                                logprobs=0, skip_special_tokens=True, stop=stop)
        outs = self.llm.generate(self._prompts(seqs), params, use_tqdm=False)
        if not stop:
            return [[(c.text, float(c.cumulative_logprob or 0.0)) for c in out.outputs] for out in outs]
        # vLLM keeps the token completing the stop string; apply_stop decides which tokens count
        return [[apply_stop(self.tok, list(c.token_ids), _chosen_logprobs(c.token_ids, c.logprobs), stop)
                 for c in out.outputs] for out in outs]

    def sample_chunks(self, prompts: list[str], partials: list[str], num_samples: int, max_tokens: list[int],
                      temperature: float = 0.7, top_k: int = 0, seed: int = 0, chat: bool = False,
                      stop: list[str] | None = None) -> list[list[tuple[str, int, bool]]]:
        """See ModelBackend.sample_chunks; one vLLM call for every row (a SamplingParams per row:
        the rows' budgets differ). A row ended by the end token or a stop string has
        finish_reason "stop"; the stop string is cut off the text (vLLM's `stop`)."""
        from vllm import SamplingParams

        if temperature <= 0:
            raise ValueError("sample_chunks: temperature must be > 0")
        stop = check_stop(stop)
        longest = max(max_tokens, default=1)
        heads = encode_prompts(self.tok, prompts, chat, self.cfg.max_length - longest, self.spec)
        tails = self.tok(list(partials), add_special_tokens=False)["input_ids"] if partials else []
        seqs = [(h + t)[-(self.cfg.max_length - longest):] for h, t in zip(heads, tails)]
        params = [SamplingParams(n=num_samples, temperature=temperature, top_k=top_k or -1, max_tokens=m,
                                 seed=seed + i, skip_special_tokens=True, stop=stop) for i, m in enumerate(max_tokens)]
        outs = self.llm.generate(self._prompts(seqs), params, use_tqdm=False)
        return [[(c.text, len(c.token_ids), c.finish_reason == "stop") for c in out.outputs] for out in outs]

    def end_text(self) -> str:
        return self.tok.eos_token or ""

    def beam_search(self, prompts: list[str], num_beams: int, max_new_tokens: int = 64,
                    chat: bool = False) -> list[list[tuple[str, float]]]:
        """Top num_beams continuations per prompt by vLLM's beam search with length_penalty 0, best
        first, each with sum_t log p(y_t | x, y_<t) of its tokens (the end token included when
        generated, as in `generate`). One beam is greedy decoding, as in the HF backend.

        Unlike HF's (early_stopping=True), vLLM's search keeps every ended beam it meets among each
        step's 2 x num_beams candidates and runs to max_new_tokens, so where the end token is likely
        the two can return different beams; without ended beams they search the same candidates."""
        from vllm.sampling_params import BeamSearchParams

        if num_beams < 1:
            raise ValueError("beam_search: num_beams must be >= 1")
        if num_beams == 1:  # vLLM's one-beam search would also keep ended side candidates
            return self.generate(prompts, 1, max_new_tokens, 0.0, 0, chat)
        seqs = encode_prompts(self.tok, prompts, chat, self.cfg.max_length - max_new_tokens, self.spec)
        params = BeamSearchParams(beam_width=num_beams, max_tokens=max_new_tokens, length_penalty=0.0)
        outs = self.llm.beam_search(self._prompts(seqs), params)
        return [[self._beam(b, len(seq)) for b in out.sequences] for out, seq in zip(outs, seqs)]

    def _beam(self, beam, prompt_len: int) -> tuple[str, float]:
        """(text, summed log-prob) of one beam: its tokens after the prompt (vLLM's `beam.tokens`
        and `beam.text` hold the prompt too) up to and including the first end token."""
        new = beam.tokens[prompt_len:]
        ends = [k for k, t in enumerate(new) if t in (self.tok.eos_token_id, self.tok.pad_token_id)]
        new = new[: ends[0] + 1] if ends else new
        lp = _chosen_logprobs(new, beam.logprobs)  # beam.logprobs: one {token: Logprob} per generated step
        return self.tok.decode(new, skip_special_tokens=True), float(np.sum(lp, dtype=np.float64))

    def sequence_logprobs(self, prompts: list[str], continuations: list[str],
                          chat: bool = False) -> list[tuple[float, int]]:
        return [(float(np.sum(t, dtype=np.float64)), len(t)) for t in self.token_logprobs(prompts, continuations, chat)]

    def token_logprobs(self, prompts: list[str], continuations: list[str], chat: bool = False) -> list[list[float]]:
        """Per-token log p of each continuation (teacher forcing, tokens of `encode_pairs`)."""
        from vllm import SamplingParams

        # vLLM needs one slot past the prompt for the token it must generate
        seqs, conts = encode_pairs(self.tok, prompts, continuations, chat, self.cfg.max_length - 1, self.spec)
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outs = self.llm.generate(self._prompts(seqs), params, use_tqdm=False)
        # prompt_logprobs position t: {actual token at t: Logprob}, None at t = 0
        return [[float(out.prompt_logprobs[t][seq[t]].logprob) for t in range(len(seq) - n, len(seq))]
                for out, seq, n in zip(outs, seqs, conts)]


def _chosen_logprobs(tokens, steps) -> list[float]:
    """log p of each chosen token from vLLM's per-step {token id: Logprob} dicts."""
    return [step[t].logprob for t, step in zip(tokens, steps)]
