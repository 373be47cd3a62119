"""Shared-prompt option scoring: one packed sequence per row instead of K (prompt + option) sequences.

A row of a K-option task in answer-text mode is a prompt x and K option texts y_1..y_K. The plain
way runs K sequences x + y_k, so the prompt is computed K times. Here each row is ONE sequence

    [pad ...] x_1 .. x_P  y_1,1 .. y_1,c1  y_2,1 .. y_2,c2  ...  y_K,1 .. y_K,cK

with a block attention mask (every token sees the prompt causally and its own option causally,
never another option) and position ids that restart at P for every option, so option k's tokens
see exactly what they would see in x + y_k alone. Token y_k,i is predicted at the position before
it: the last prompt token for i = 1 (shared by all K options), y_k,i-1 otherwise.

Both the HF backend (`HFBackend.score_texts`) and the trainer (`training.sft_trainer`) use
`pack_rows` + `option_token_logprobs`; tests/test_shared_prompt.py checks them against the K-sequence
path. Models whose layers mix full and sliding-window attention (Gemma-3) get one mask per layer
type, the sliding one cut at the model's window by position distance.
"""

from __future__ import annotations

import torch

from actors.backend import encode_prompts


def supports_packing(model) -> bool:
    """True when a custom 4D mask reaches this model's attention as given: sdpa or eager attention,
    and either no sliding window or per-layer-type masks (config.layer_types)."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "is_encoder_decoder", False):
        return False
    if getattr(cfg, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
        return False
    types = getattr(cfg, "layer_types", None) or []
    sliding = [t for t in types if t != "full_attention"]
    if sliding:
        return set(sliding) == {"sliding_attention"} and bool(getattr(cfg, "sliding_window", None))
    return not getattr(cfg, "sliding_window", None) or not getattr(cfg, "use_sliding_window", True)


def encode_option_rows(tok, texts: list[str], answers: list[list[str]], chat: bool, max_length: int, spec: str = "",
                       per_row: bool = True) -> tuple[list[list[int]], list[list[list[int]]]]:
    """(prompt ids, option ids) per row for `pack_rows`. Options are cut to max_length - 1 tokens;
    each prompt is cut from the left to max_length minus the longest option (of its row, or of all
    rows with per_row=False, the trainer's K-sequence rule), so every prompt + option fits."""
    opts = [[ids[: max_length - 1] for ids in tok(row, add_special_tokens=False)["input_ids"]] for row in answers]
    if any(not c for row in opts for c in row):
        raise ValueError("sequence_logprobs: empty continuation")
    if not per_row:
        longest = max(len(c) for row in opts for c in row)
        return encode_prompts(tok, texts, chat, max_length - longest, spec), opts
    return [encode_prompts(tok, [t], chat, max_length - max(len(c) for c in row), spec)[0]
            for t, row in zip(texts, opts)], opts


def pack_rows(prompts: list[list[int]], options: list[list[list[int]]], pad_id: int) -> dict:
    """Left-padded packed batch. prompts[b]: token ids of row b's prompt (already cut); options[b][k]:
    option k's ids (non-empty). Returns input_ids / position_ids / segment [B, T] (segment 0: prompt,
    k + 1: option k, -1: pad), keep (logit positions needed, counted from the right), and for
    [B, K, c] (c = the longest option): pred (index into the last `keep` positions of the token that
    predicts each option token), cont_ids (its id) and cont_mask (all False for a row's missing options)."""
    if len(prompts) != len(options):
        raise ValueError("pack_rows: prompts and options differ in length")
    k = max(len(o) for o in options)  # rows with fewer options leave the rest masked out
    if any(not c for o in options for c in o) or any(not p for p in prompts):
        raise ValueError("pack_rows: empty prompt or option")
    lengths = [len(p) + sum(len(c) for c in o) for p, o in zip(prompts, options)]
    width = max(lengths)
    keep = max(sum(len(c) for c in o) + 1 for o in options)
    c_max = max(len(c) for o in options for c in o)
    b_n = len(prompts)
    ids = torch.full((b_n, width), pad_id, dtype=torch.long)
    pos = torch.zeros((b_n, width), dtype=torch.long)
    seg = torch.full((b_n, width), -1, dtype=torch.long)
    pred = torch.zeros((b_n, k, c_max), dtype=torch.long)
    target = torch.full((b_n, k, c_max), pad_id, dtype=torch.long)
    cont = torch.zeros((b_n, k, c_max), dtype=torch.bool)
    for b, (p, opts) in enumerate(zip(prompts, options)):
        at = width - lengths[b]
        ids[b, at:at + len(p)] = torch.tensor(p)
        pos[b, at:at + len(p)] = torch.arange(len(p))
        seg[b, at:at + len(p)] = 0
        last_prompt = at + len(p) - 1
        at += len(p)
        for j, c in enumerate(opts):
            n = len(c)
            ids[b, at:at + n] = torch.tensor(c)
            pos[b, at:at + n] = torch.arange(len(p), len(p) + n)
            seg[b, at:at + n] = j + 1
            before = torch.tensor([last_prompt] + list(range(at, at + n - 1)))
            pred[b, j, :n] = before - (width - keep)
            target[b, j, :n] = torch.tensor(c)
            cont[b, j, :n] = True
            at += n
    return {"input_ids": ids, "position_ids": pos, "segment": seg, "keep": keep,
            "pred": pred, "cont_ids": target, "cont_mask": cont}


def block_mask(segment: torch.Tensor, position: torch.Tensor, boolean: bool, dtype=torch.float32,
               window: int | None = None) -> torch.Tensor:
    """[B, 1, T, T] mask: query q sees key j when j <= q, j is not padding, and j is in the prompt or
    in q's own option; with a window also position[q] - position[j] < window (the sliding layers'
    rule on the unpacked sequence). Every token sees itself, so padded rows never softmax over
    nothing. boolean: True = attend (sdpa); else additive 0 / dtype-min (eager attention)."""
    t = segment.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segment.device).tril()
    sq, sk = segment[:, :, None], segment[:, None, :]
    allowed = causal & (sk >= 0) & ((sk == 0) | (sk == sq))
    if window:
        allowed &= (position[:, :, None] - position[:, None, :]) < window
    allowed |= torch.eye(t, dtype=torch.bool, device=segment.device)
    allowed = allowed[:, None]
    if boolean:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=segment.device).masked_fill(~allowed,
                                                                                      torch.finfo(dtype).min)


def attention_mask_for(model, segment: torch.Tensor, position: torch.Tensor, dtype=torch.float32):
    """The block mask in the form `model` takes: one tensor, or a dict per layer type (sliding models)."""
    cfg = model.config
    boolean = getattr(cfg, "_attn_implementation", "sdpa") == "sdpa"
    full = block_mask(segment, position, boolean, dtype)
    if "sliding_attention" in (getattr(cfg, "layer_types", None) or []):
        return {"full_attention": full,
                "sliding_attention": block_mask(segment, position, boolean, dtype, cfg.sliding_window)}
    return full


def option_token_logprobs(model, packed: dict, dtype=torch.float32) -> torch.Tensor:
    """log p(y_k,i | x, y_k,<i) for every option token, [B, K, c] (0 where cont_mask is False).
    One forward over the packed rows; logits only at the last `keep` positions."""
    mask = packed.get("attention_mask")
    if mask is None:
        mask = attention_mask_for(model, packed["segment"], packed["position_ids"], dtype)
    logits = model(input_ids=packed["input_ids"], attention_mask=mask, position_ids=packed["position_ids"],
                   logits_to_keep=packed["keep"]).logits
    b, k, c = packed["pred"].shape
    lp = logprobs_at(logits, packed["pred"].reshape(b, k * c), packed["cont_ids"].reshape(b, k * c))
    return lp.view(b, k, c) * packed["cont_mask"]


# float32 elements of one log-softmax chunk (256 MiB): a batch's [B, T, V] at once did not fit
# Gemma-3's 262k vocabulary (32 judge rows of ~70 kept positions: 7.5 GB in one actor, an OOM),
# and 1 GiB chunks in each of an evaluation pass's 7 actors did not either
LSM_CHUNK_ELEMENTS = 2**26


def logprobs_at(logits: torch.Tensor, pos: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log softmax(logits[b, pos[b, n]])[ids[b, n]] -> [B, N], in float32, a few rows at a time
    (the same values as one log_softmax over the whole batch, without its [B, T, V] copy)."""
    b, t, v = logits.shape
    rows = max(1, LSM_CHUNK_ELEMENTS // max(1, t * v))
    parts = []
    for s in range(0, b, rows):
        lsm = torch.log_softmax(logits[s:s + rows].float(), -1)
        parts.append(lsm.reshape(lsm.shape[0], -1).gather(1, pos[s:s + rows] * v + ids[s:s + rows]))
    return torch.cat(parts)


def option_mean_logprobs(model, packed: dict, dtype=torch.float32) -> torch.Tensor:
    """s_k = (1/|y_k|) sum_i log p(y_k,i | x, y_k,<i) per option (seed 001 Eq. 1), [B, K]; a row's
    missing options (variable K) get 0."""
    lp = option_token_logprobs(model, packed, dtype)
    return lp.sum(-1) / packed["cont_mask"].sum(-1).clamp(min=1)
