"""Hugging Face transformers backend: option scoring and teacher-forced log-probabilities.

Option scoring runs one forward pass per row and projects only the answer position's hidden
state to logits (`logits_to_keep=1`), then keeps the K option-label tokens. Rows are sorted by
length and packed into micro-batches of at most `max_batch_tokens` padded tokens.
"""

from __future__ import annotations

import numpy as np
import torch

from transformers import StoppingCriteria, StoppingCriteriaList

from actors.backend import (BackendConfig, ModelBackend, apply_stop, check_stop, default_threads, encode_pairs,
                            encode_prompts, label_token_ids, resolve_dtype, stop_cut, trim_heap)
from actors.packing import encode_option_rows, logprobs_at, option_mean_logprobs, pack_rows, supports_packing
from actors.registry import load_model

# kept logits per packed micro-batch (bf16: 256 MiB): rows x positions x vocabulary
MAX_LOGIT_ELEMENTS = 2**27


class HFBackend(ModelBackend):
    def __init__(self, spec: str, cfg: BackendConfig):
        self.spec, self.cfg = spec, cfg
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu":
            torch.set_num_threads(default_threads(cfg))
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        head = "classifier" if cfg.head == "classifier" else "causal_lm"
        self.model, self.tok = load_model(spec, head, dtype=self.dtype, device=self.device)
        self.model.eval()
        if self.device == "cpu":
            trim_heap()  # the load's freed staging buffers (cluster.config keeps glibc from trimming)
        if cfg.compile:
            # dynamic: batches differ in rows and length; one graph serves them all
            self.model = torch.compile(self.model, dynamic=True)
        self._label_cache: dict[str, int] = {}
        self.tokens_seen = 0  # prompt tokens run through the model (throughput accounting)

    def info(self) -> dict:
        n_params = sum(p.numel() for p in self.model.parameters())
        n_embed = self.model.get_input_embeddings().weight.numel()
        return {"spec": self.spec, "device": self.device, "dtype": str(self.dtype).replace("torch.", ""),
                "params": n_params, "non_embedding_params": n_params - n_embed,
                "threads": torch.get_num_threads(), "config": _arch(self.model.config)}

    def _micro_batches(self, lengths: list[int], budget: int | None = None):
        """Indices grouped so that (rows x longest row) <= budget (max_batch_tokens), shortest first."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        for start, end in bucket_bounds([lengths[i] for i in order], budget or self.cfg.max_batch_tokens):
            yield order[start:end]

    def _logit_capped(self, batches, keeps: list[int]):
        """Micro-batches split further so that rows x kept positions x vocabulary stays within
        MAX_LOGIT_ELEMENTS: Gemma-3's 262k vocabulary made 64-row batches of option texts cost
        ~1.2 GB more per actor than 16-row ones, and an evaluation pass of 7 such actors ran out
        of memory (docs/measurements.md)."""
        vocab = self.model.get_output_embeddings().weight.shape[0]
        for batch in batches:
            rows = max(1, MAX_LOGIT_ELEMENTS // (vocab * max(keeps[i] for i in batch)))
            for s in range(0, len(batch), rows):
                yield batch[s:s + rows]

    def _pad_left(self, seqs: list[list[int]]):
        width = max(len(s) for s in seqs)
        pad = self.tok.pad_token_id
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, width - len(s):] = torch.tensor(s)
            mask[r, width - len(s):] = 1
        # positions count real tokens only, so a left-padded row sees the same positions as alone
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), pos.to(self.device)

    @torch.inference_mode()
    def score_options(self, texts: list[str], labels: list[list[str]], chat: bool = False) -> list[np.ndarray]:
        if len(texts) != len(labels):
            raise ValueError("score_options: texts and labels differ in length")
        classifier = self.cfg.head == "classifier"
        if classifier and any(len(row) != self.model.config.num_labels for row in labels):
            raise ValueError(f"classifier head has {self.model.config.num_labels} labels; rows differ in options")
        label_ids = None if classifier else [label_token_ids(self.tok, row, self._label_cache) for row in labels]
        seqs = encode_prompts(self.tok, texts, chat, self.cfg.max_length, self.spec)
        out: list[np.ndarray | None] = [None] * len(texts)
        for batch in self._micro_batches([len(s) for s in seqs]):
            ids, mask, pos = self._pad_left([seqs[i] for i in batch])
            if classifier:
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
            else:
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                    logits_to_keep=1).logits[:, -1].float()
            for r, i in enumerate(batch):
                row = logits[r] if classifier else logits[r, label_ids[i]]
                out[i] = torch.softmax(row, -1).cpu().numpy().astype(np.float64)
            self.tokens_seen += int(mask.sum())
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def score_texts(self, texts: list[str], answers: list[list[str]], chat: bool = False) -> list[np.ndarray]:
        """As ModelBackend.score_texts, with each prompt computed once (backend.shared_prompt):
        the options are continuations in one packed row (actors/packing.py). Prompts are cut to
        max_length minus the row's longest option, so each unpacked prompt + option fits."""
        if not self.cfg.shared_prompt or self.cfg.head == "classifier" or not supports_packing(self.model):
            return super().score_texts(texts, answers, chat)
        if len(texts) != len(answers):
            raise ValueError("score_texts: texts and answers differ in length")
        prompts, opts = encode_option_rows(self.tok, texts, answers, chat, self.cfg.max_length, self.spec)
        lengths = [len(p) + sum(len(c) for c in row) for p, row in zip(prompts, opts)]
        keeps = [sum(len(c) for c in row) + 1 for row in opts]  # logit positions each row needs
        out: list[np.ndarray | None] = [None] * len(texts)
        for batch in self._logit_capped(self._micro_batches(lengths), keeps):
            packed = pack_rows([prompts[i] for i in batch], [opts[i] for i in batch], self.tok.pad_token_id)
            packed = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in packed.items()}
            s = option_mean_logprobs(self.model, packed, self.dtype).double().cpu().numpy()
            for r, i in enumerate(batch):
                row = s[r, : len(opts[i])]
                e = np.exp(row - row.max())
                out[i] = e / e.sum()
            self.tokens_seen += int((packed["segment"] >= 0).sum())
        return out  # type: ignore[return-value]

    def sequence_logprobs(self, prompts: list[str], continuations: list[str],
                          chat: bool = False) -> list[tuple[float, int]]:
        return [(float(np.sum(t, dtype=np.float64)), len(t)) for t in self.token_logprobs(prompts, continuations, chat)]

    @torch.inference_mode()
    def token_logprobs(self, prompts: list[str], continuations: list[str], chat: bool = False) -> list[list[float]]:
        """Per-token log p of each continuation (teacher forcing, tokens of `encode_pairs`)."""
        seqs, conts = encode_pairs(self.tok, prompts, continuations, chat, self.cfg.max_length, self.spec)
        out: list[list[float] | None] = [None] * len(prompts)
        for batch in self._micro_batches([len(s) for s in seqs]):
            ids, mask, pos = self._pad_left([seqs[i] for i in batch])
            keep = max(conts[i] for i in batch) + 1
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep).logits
            # position t predicts token t+1; chunked: [B, keep, V] at once does not fit large vocabularies
            pos = torch.arange(keep - 1, device=ids.device).expand(len(batch), -1)
            tok_logp = logprobs_at(logits[:, :-1], pos, ids[:, -keep + 1:])
            for r, i in enumerate(batch):
                out[i] = tok_logp[r, -conts[i]:].tolist()
            self.tokens_seen += int(mask.sum())
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def rewards(self, texts: list[str], chat: bool = False) -> list[float]:
        """logits[0] of a one-label classifier head per text (left-padded, length-bucketed batches)."""
        if self.cfg.head != "classifier" or self.model.config.num_labels != 1:
            raise ValueError(f"rewards: model {self.spec!r} needs backend.head=classifier with num_labels=1 "
                             f"(got head={self.cfg.head}, num_labels={self.model.config.num_labels})")
        seqs = encode_prompts(self.tok, texts, chat, self.cfg.max_length, self.spec)
        out = [0.0] * len(texts)
        for batch in self._micro_batches([len(s) for s in seqs]):
            ids, mask, pos = self._pad_left([seqs[i] for i in batch])
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
            for r, i in enumerate(batch):
                out[i] = float(logits[r, 0])
            self.tokens_seen += int(mask.sum())
        return out

    @torch.inference_mode()
    def generate(self, prompts: list[str], num_samples: int = 1, max_new_tokens: int = 64,
                 temperature: float = 0.0, seed: int = 0, chat: bool = False,
                 stop: list[str] | None = None) -> list[list[tuple[str, float]]]:
        """See ModelBackend.generate. With stop strings a row stops generating at the token whose
        text completes one (`_StopOnText`), then text and log-probability are cut by `apply_stop`."""
        if temperature == 0 and num_samples > 1:
            raise ValueError("generate: greedy decoding gives one sequence; use temperature > 0 for samples")
        stop = check_stop(stop)
        seqs = encode_prompts(self.tok, prompts, chat, self.cfg.max_length - max_new_tokens, self.spec)
        torch.manual_seed(seed)
        out: list[list[tuple[str, float]] | None] = [None] * len(prompts)
        for i, new, logp, alive in self._sample(seqs, list(range(len(seqs))), num_samples, max_new_tokens,
                                                temperature, None, stop):
            out[i] = [self._finish(new[j][alive[j]], logp[j][alive[j]], stop) for j in range(num_samples)]
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def sample_chunks(self, prompts: list[str], partials: list[str], num_samples: int, max_tokens: list[int],
                      temperature: float = 0.7, top_k: int = 0, seed: int = 0, chat: bool = False,
                      stop: list[str] | None = None) -> list[list[tuple[str, int, bool]]]:
        """See ModelBackend.sample_chunks: the partial response is appended as text to the rendered
        prompt (re-tokenised), and num_samples chunks of at most max_tokens[row] tokens are sampled
        after it (temperature, top_k; 0: no top-k filter)."""
        if temperature <= 0:
            raise ValueError("sample_chunks: temperature must be > 0")
        stop = check_stop(stop)
        if not len(prompts) == len(partials) == len(max_tokens):
            raise ValueError("sample_chunks: prompts, partials and max_tokens differ in length")
        longest = max(max_tokens, default=1)
        heads = encode_prompts(self.tok, prompts, chat, self.cfg.max_length - longest, self.spec)
        tails = self.tok(list(partials), add_special_tokens=False)["input_ids"] if partials else []
        seqs = [(h + t)[-(self.cfg.max_length - longest):] for h, t in zip(heads, tails)]
        torch.manual_seed(seed)
        out: list[list[tuple[str, int, bool]] | None] = [None] * len(prompts)
        for n in sorted(set(max_tokens)):  # rows with the same budget generate together
            rows = [i for i, m in enumerate(max_tokens) if m == n]
            for i, new, _, alive in self._sample(seqs, rows, num_samples, n, temperature, top_k or None, stop):
                out[i] = [self._chunk(partials[i], new[j][alive[j]], stop) for j in range(num_samples)]
        return out  # type: ignore[return-value]

    def _chunk(self, partial: str, tokens: torch.Tensor, stop: list[str] | None) -> tuple[str, int, bool]:
        """(chunk text, tokens generated, ended by the end token or a stop string); a stop string is
        searched in partial + chunk (one split across the chunk boundary counts) and cut off."""
        if self.tok.pad_token_id != self.tok.eos_token_id:
            tokens = tokens[tokens != self.tok.pad_token_id]  # the padding after a row stopped by a stop string
        ended = bool((tokens == self.tok.eos_token_id).any())
        text = self.tok.decode(tokens, skip_special_tokens=True)
        if stop and (cut := stop_cut(partial + text, stop)) is not None:
            text, ended = text[:max(cut - len(partial), 0)], True
        return text, int(tokens.numel()), ended

    def _sample(self, seqs: list[list[int]], rows: list[int], num_samples: int, max_new_tokens: int,
                temperature: float, top_k: int | None, stop: list[str] | None):
        """model.generate over seqs[rows] in micro-batches; yields (row, new tokens [num_samples, T],
        their log-probabilities from the raw logits, the mask of tokens up to the end token)."""
        budget = max(1, self.cfg.max_batch_tokens // num_samples)
        for part in self._micro_batches([len(seqs[i]) + max_new_tokens for i in rows], budget):
            batch = [rows[k] for k in part]
            ids, mask, _ = self._pad_left([seqs[i] for i in batch])
            stopping = StoppingCriteriaList([_StopOnText(self.tok, stop, ids.shape[1])]) if stop else None
            gen = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None, top_p=None, top_k=top_k,
                num_return_sequences=num_samples, output_logits=True, return_dict_in_generate=True,
                pad_token_id=self.tok.pad_token_id, stopping_criteria=stopping)
            new = gen.sequences[:, ids.shape[1]:]
            # log p of each chosen token from the raw logits (generation config processors excluded)
            logp = torch.stack(gen.logits, 1).float().log_softmax(-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
            alive = _before_eos(new, self.tok.eos_token_id, self.tok.pad_token_id)
            self.tokens_seen += int(mask.sum()) * num_samples + int(alive.sum())
            for r, i in enumerate(batch):
                rows_r = slice(r * num_samples, (r + 1) * num_samples)
                yield i, new[rows_r], logp[rows_r], alive[rows_r]

    def end_text(self) -> str:
        return self.tok.eos_token or ""

    def _finish(self, tokens: torch.Tensor, logp: torch.Tensor, stop: list[str] | None) -> tuple[str, float]:
        """(text, summed log-prob) of one generated row (end token included, padding excluded)."""
        if not stop:
            return self.tok.decode(tokens, skip_special_tokens=True), float(logp.sum())
        return apply_stop(self.tok, tokens.tolist(), logp.tolist(), stop)

    @torch.inference_mode()
    def beam_search(self, prompts: list[str], num_beams: int, max_new_tokens: int = 64,
                    chat: bool = False) -> list[list[tuple[str, float]]]:
        """Top num_beams sequences per prompt by beam search ranked on the summed log-probability
        (length_penalty 0), each with sum_t log p(y_t | x, y_<t) from the raw logits (the end token
        included when generated, as in `generate`; generation-config processors excluded)."""
        if num_beams < 1:
            raise ValueError("beam_search: num_beams must be >= 1")
        seqs = encode_prompts(self.tok, prompts, chat, self.cfg.max_length - max_new_tokens, self.spec)
        out: list[list[tuple[str, float]] | None] = [None] * len(prompts)
        budget = max(1, self.cfg.max_batch_tokens // num_beams)
        for batch in self._micro_batches([len(s) + max_new_tokens for s in seqs], budget):
            ids, mask, _ = self._pad_left([seqs[i] for i in batch])
            beams = {"num_beams": num_beams, "length_penalty": 0.0, "early_stopping": True} if num_beams > 1 else {}
            gen = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                num_return_sequences=num_beams, temperature=None, top_p=None, top_k=None, output_logits=True,
                return_dict_in_generate=True, pad_token_id=self.tok.pad_token_id, **beams)
            logp = self.model.compute_transition_scores(gen.sequences, [x.float() for x in gen.logits],
                                                        getattr(gen, "beam_indices", None), normalize_logits=True)
            new = gen.sequences[:, ids.shape[1]:]
            alive = _before_eos(new, self.tok.eos_token_id, self.tok.pad_token_id)
            logp = (logp * alive).sum(-1)  # greedy (one beam) leaves the padding after the end token unmasked
            for r, i in enumerate(batch):
                rows = range(r * num_beams, (r + 1) * num_beams)
                out[i] = [(self.tok.decode(new[j][alive[j]], skip_special_tokens=True), float(logp[j])) for j in rows]
            self.tokens_seen += int(mask.sum()) * num_beams + int(alive.sum())
        return out  # type: ignore[return-value]


class _StopOnText(StoppingCriteria):
    """Ends a row once its generated text (decoded, special tokens skipped) holds a stop string.

    Not transformers' own `stop_strings`: that matcher also reads the prompt tokens before the
    generated ones and token strings rather than decoded text, so it can stop a row whose generated
    text holds no stop string, where vLLM (which searches the generated text) goes on."""

    def __init__(self, tok, stop: list[str], prompt_width: int):
        self.tok, self.stop, self.prompt_width = tok, stop, prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tok.batch_decode(input_ids[:, self.prompt_width:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], dtype=torch.bool, device=input_ids.device)


def _before_eos(new: torch.Tensor, eos_id, pad_id) -> torch.Tensor:
    """Mask of generated tokens up to and including the first end token (padding after it)."""
    stop = torch.zeros_like(new, dtype=torch.bool)
    for t in {eos_id, pad_id} - {None}:
        stop |= new == t
    after = (stop.cumsum(1) - stop.long()) > 0  # strictly after the first stop token
    return ~after


def bucket_bounds(sorted_lengths: list[int], budget: int, overhead: int | None = None) -> list[tuple[int, int]]:
    """Split length-sorted rows into contiguous micro-batches with rows x longest <= budget,
    minimising padded tokens + `overhead` per forward call (small batches run matmuls far below
    peak on CPU, so each call is charged budget/8 token-equivalents). Dynamic programming, O(n x w)."""
    n = len(sorted_lengths)
    overhead = budget // 8 if overhead is None else overhead
    best = [0.0] + [float("inf")] * n  # best[j]: cost of batching rows [0, j)
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = sorted_lengths[j - 1]
        for i in range(j - 1, -1, -1):  # batch = rows [i, j); a single row is always allowed
            if i < j - 1 and (j - i) * longest > budget:
                break
            cost = best[i] + (j - i) * longest + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    bounds, j = [], n
    while j > 0:
        bounds.append((cut[j], j))
        j = cut[j]
    return bounds[::-1]


def _arch(config) -> dict:
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "vocab_size", "head_dim")
    return {k: getattr(config, k) for k in keys if getattr(config, k, None) is not None}
