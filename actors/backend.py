"""The model backend interface every actor works through (HF transformers default, vLLM optional)."""

from __future__ import annotations

import abc
import functools
import math
import os
from dataclasses import dataclass

import numpy as np


@dataclass
class BackendConfig:
    kind: str = "hf"  # hf | vllm
    head: str = "lm"  # lm: the option label is the next token; classifier: a K-way classification head
    dtype: str = "auto"  # auto (bf16 where the GPU supports it or the CPU runs it faster, else fp32) | bfloat16 | float16 | float32
    max_length: int = 1024  # tokens per sequence; longer prompts lose their start
    # padded tokens per forward micro-batch (rows bucketed by length). 4096 measured best on a
    # 2-core CPU (bigger batches spill caches); raise it on GPUs.
    max_batch_tokens: int = 4096
    threads: int = 0  # torch intra-op threads on CPU; 0: the actor's CPU share, rounded up
    # torch.compile the model (fuses the elementwise ops that take half of a bf16 forward on
    # CPU). Costs 1-2 min once per process (cached on disk); pays off on long annotation runs.
    compile: bool = False
    # answer-text scoring: the prompt once and the K options as continuations in one packed
    # sequence with a block mask (actors/packing.py), instead of K prompt + option sequences
    shared_prompt: bool = True
    gpu_memory_utilization: float = 0.85  # vLLM only

    def __post_init__(self):
        if self.kind not in ("hf", "vllm"):
            raise ValueError(f"kind: must be hf or vllm, got {self.kind!r}")
        if self.head not in ("lm", "classifier"):
            raise ValueError(f"head: must be lm or classifier, got {self.head!r}")
        if self.head == "classifier" and self.kind != "hf":
            raise ValueError("head: classifier heads run on the hf backend")
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ValueError(f"dtype: must be auto|bfloat16|float16|float32, got {self.dtype!r}")
        if self.max_length < 8:
            raise ValueError("max_length: must be >= 8")
        if self.max_batch_tokens < self.max_length:
            raise ValueError("max_batch_tokens: must be >= backend.max_length")
        if self.threads < 0:
            raise ValueError("threads: must be >= 0")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization: must be in (0, 1]")


class ModelBackend(abc.ABC):
    """Batched model calls. Texts are already rendered prompts; labels are option label strings."""

    @abc.abstractmethod
    def score_options(self, texts: list[str], labels: list[list[str]], chat: bool = False) -> list[np.ndarray]:
        """P(option label | text) for each row, renormalised over that row's labels (one forward pass).
        chat: wrap each text as the user turn of the model's chat template first."""

    @abc.abstractmethod
    def sequence_logprobs(self, prompts: list[str], continuations: list[str],
                          chat: bool = False) -> list[tuple[float, int]]:
        """(sum of log p(continuation tokens | prompt), number of continuation tokens) per row."""

    def token_logprobs(self, prompts: list[str], continuations: list[str], chat: bool = False) -> list[list[float]]:
        """log p(token | prompt, earlier tokens) of each continuation token (teacher forcing; the
        tokens of `encode_pairs`); their sum is `sequence_logprobs`' first value."""
        raise NotImplementedError(f"{type(self).__name__}: this backend does not return per-token "
                                  "log-probabilities (use backend.kind=hf)")

    def score_texts(self, texts: list[str], answers: list[list[str]], chat: bool = False) -> list[np.ndarray]:
        """P(option | text) from each option text's length-normalised log-likelihood
        s_k = (1/|y_k|) sum_i log p(y_k,i | x, y_k,<i) (seed 001 Eq. 1), softmax over the row's options."""
        prompts = [t for t, row in zip(texts, answers) for _ in row]
        flat = self.sequence_logprobs(prompts, [a for row in answers for a in row], chat)
        out, pos = [], 0
        for row in answers:
            s = np.array([lp / n for lp, n in flat[pos:pos + len(row)]])
            pos += len(row)
            e = np.exp(s - s.max())
            out.append(e / e.sum())
        return out

    @abc.abstractmethod
    def generate(self, prompts: list[str], num_samples: int = 1, max_new_tokens: int = 64,
                 temperature: float = 0.0, seed: int = 0, chat: bool = False,
                 stop: list[str] | None = None) -> list[list[tuple[str, float]]]:
        """num_samples continuations per prompt (greedy when temperature == 0), each with the sum of
        its tokens' log-probabilities under the model (temperature 1, before sampling).
        stop: generation of a row ends once its text holds one of these strings; the text and its
        log-probability are then cut as `apply_stop` says. None (or []): no stop strings."""

    def sample_chunks(self, prompts: list[str], partials: list[str], num_samples: int, max_tokens: list[int],
                      temperature: float = 0.7, top_k: int = 0, seed: int = 0, chat: bool = False,
                      stop: list[str] | None = None) -> list[list[tuple[str, int, bool]]]:
        """Per row, num_samples chunks sampled after the rendered prompt followed by the partial
        response: (chunk text, tokens generated, ended by the end token or a stop string), at most
        max_tokens[row] tokens each (pipelines/cbs.py, weak-to-strong search). A stop string is cut
        off the text as in `generate`."""
        raise NotImplementedError(f"{type(self).__name__}: this backend does not sample chunks "
                                  "(use backend.kind=hf or vllm)")

    def end_text(self) -> str:
        """The end token as text (appended to a finished response to score its end), or ""."""
        return ""

    def beam_search(self, prompts: list[str], num_beams: int, max_new_tokens: int = 64,
                    chat: bool = False) -> list[list[tuple[str, float]]]:
        """Top num_beams continuations per prompt by beam search, best first, each with its summed
        token log-probability (seed 003 section 4.1: the M beams of one weak model)."""
        raise NotImplementedError(f"{type(self).__name__}: this backend does not run beam search "
                                  "(use backend.kind=hf)")

    @abc.abstractmethod
    def info(self) -> dict:
        """Device, dtype and model facts for logs and placement checks."""

    def rewards(self, texts: list[str], chat: bool = False) -> list[float]:
        """Scalar reward per text from a classifier head with one label (a Bradley-Terry reward model)."""
        raise NotImplementedError(f"{type(self).__name__}: this backend does not serve scalar rewards "
                                  "(the vLLM backend does not serve scalar rewards; use backend.kind=hf)")


def encode_prompts(tok, texts: list[str], chat: bool, max_length: int, spec: str = "") -> list[list[int]]:
    """Token ids per prompt (chat template applied when asked), cut from the left to max_length.
    Both backends use this, so HF and vLLM score exactly the same tokens."""
    if chat:
        if not tok.chat_template:
            raise ValueError(f"template.chat: model {spec!r} has no chat template")
        texts = [tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False)
                 for t in texts]
    enc = tok(texts, add_special_tokens=not chat)["input_ids"]  # a chat template holds its own specials
    return [ids[-max_length:] for ids in enc]


def encode_pairs(tok, prompts: list[str], continuations: list[str], chat: bool, max_length: int,
                 spec: str = "") -> tuple[list[list[int]], list[int]]:
    """Prompt+continuation token ids cut from the left to max_length, and each continuation's length.
    The continuation keeps at least one prompt token before it (it must be predicted from something)."""
    if len(prompts) != len(continuations):
        raise ValueError("sequence_logprobs: prompts and continuations differ in length")
    p_ids = encode_prompts(tok, prompts, chat, max_length, spec)
    c_ids = tok(continuations, add_special_tokens=False)["input_ids"]
    seqs, conts = [], []
    for p, c in zip(p_ids, c_ids):
        if not c:
            raise ValueError("sequence_logprobs: empty continuation")
        c = c[: max_length - 1]
        seqs.append((p + c)[-max_length:])
        conts.append(len(c))
    return seqs, conts


def check_stop(stop: list[str] | None) -> list[str] | None:
    """The stop strings as a list, or None when there are none; refuses a bare string (it would be
    read as one stop string per character) and the empty string (it would cut every text to "")."""
    if stop is None or isinstance(stop, (list, tuple)) and not stop:
        return None
    if isinstance(stop, str) or not all(isinstance(s, str) for s in stop):
        raise ValueError(f"generate: stop must be a list of strings, got {stop!r}")
    if "" in stop:
        raise ValueError("generate: stop strings must be non-empty")
    return list(stop)


def stop_cut(text: str, stop: list[str]) -> int | None:
    """Where to cut `text`: the start of the stop-string occurrence that ends first (ties: the one
    earlier in `stop`), as vLLM picks it; None when no stop string occurs. Ending first is what
    stops generation, so the kept text never holds a whole stop string."""
    hits = [(i + len(s), k, i) for k, s in enumerate(stop) if (i := text.find(s)) >= 0]
    return min(hits)[2] if hits else None


def apply_stop(tok, tokens: list[int], logps: list[float], stop: list[str]) -> tuple[str, float]:
    """(text, log-probability) of one generated row under stop strings, the same in every backend.

    text: the decoded tokens (special tokens skipped) cut before the stop string (`stop_cut`).
    log-probability: the sum of logps over the shortest token prefix whose decoded text starts
    with that cut text, i.e. the tokens up to and including the one completing the text before
    the stop (a token that also holds the stop's first characters counts; the tokens after it do
    not; a text cut to "" sums no token: 0.0). Without a stop string: the whole text and sum."""
    text = tok.decode(tokens, skip_special_tokens=True)
    cut = stop_cut(text, stop)
    if cut is None:
        return text, float(np.sum(logps, dtype=np.float64))
    text = text[:cut]
    # the full row always qualifies, so next() finds a prefix
    kept = next(k for k in range(len(tokens) + 1) if tok.decode(tokens[:k], skip_special_tokens=True).startswith(text))
    return text, float(np.sum(logps[:kept], dtype=np.float64))


def label_token_ids(tok, labels: list[str], cache: dict[str, int]) -> list[int]:
    """First token of each option label (e.g. ' A'); the labels of one row must differ in it."""
    ids = []
    for label in labels:
        if label not in cache:
            enc = tok.encode(label, add_special_tokens=False)
            if not enc:
                raise ValueError(f"option label {label!r} tokenizes to nothing")
            cache[label] = enc[0]
        ids.append(cache[label])
    if len(set(ids)) != len(ids):
        raise ValueError(f"option labels {labels} share a first token; use distinct labels (letters)")
    return ids


BF16_MIN_SPEEDUP = 1.25  # bf16 on the CPU only where its matmuls run at least this much faster


BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")  # the CPU flags that bear on bf16 speed


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ('model name', 'cpu family', 'model',
    'flags', ...); {} where it cannot be read."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_bf16_flags() -> bool:
    """Whether the CPU has bf16 instructions (avx512_bf16 or amx_bf16 in /proc/cpuinfo)."""
    flags = set(cpu_info().get("flags", "").split())
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup(n: int = 1024, reps: int = 3) -> float:
    """bf16 over fp32 matmul rate on this CPU at this process's thread count (best of `reps`
    alternated n x n x n products, about 0.1 s). The flags alone mislead: bf16 matmuls ran 6x fp32
    with AMX, 2.5x on AMD EPYC (avx512_bf16), and 0.5x on an Intel Xeon whose hypervisor hides AMX
    (avx512_bf16 only; training 1.7x slower under bf16 autocast there: docs/measurements.md)."""
    import time

    import torch

    best = {}
    for _ in range(reps):
        for dtype in (torch.float32, torch.bfloat16):
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            a @ b  # first call: the kernel's set-up
            t0 = time.perf_counter()
            a @ b
            best[dtype] = min(best.get(dtype, float("inf")), time.perf_counter() - t0)
    return best[torch.float32] / best[torch.bfloat16]


def _machine_key() -> str:
    """This host, its CPU model, its bf16 flags and torch's version: what the bf16 ratio depends on
    (the same model name comes with and without AMX, depending on the hypervisor)."""
    import platform

    import torch

    info = cpu_info()
    flags = set(info.get("flags", "").split())
    bf16 = ",".join(f for f in BF16_FLAGS if f in flags)
    return f"{platform.node()} | {info.get('model name', '')} | {bf16 or 'no bf16'} | torch {torch.__version__}"


@functools.lru_cache(maxsize=1)
def machine_bf16_speedup() -> float:
    """cpu_bf16_speedup measured once per machine and kept in $W2S_CACHE/cpu_bf16.json, so that
    every process on the machine decides alike: two Serve replicas probing at once on a busy
    2-core box measured differently, one ran bf16 and one fp32, and the same request got two
    rewards. A file lock makes the first process measure and the others read its figure."""
    import fcntl
    import json

    from actors.embedded import cache_dir

    path, key = cache_dir() / "cpu_bf16.json", _machine_key()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name("cpu_bf16.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                known = json.loads(path.read_text())
            except (OSError, ValueError):
                known = {}
            if key not in known:
                known[key] = cpu_bf16_speedup()
                tmp = path.with_name(f"cpu_bf16.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(known, indent=1))
                os.replace(tmp, path)
            return float(known[key])
    except OSError:  # a read-only cache: measure in this process
        return cpu_bf16_speedup()


def cpu_supports_bf16() -> bool:
    """bf16 is worth it on this CPU: bf16 instructions, and bf16 matmuls measured at least
    BF16_MIN_SPEEDUP x fp32 (three kinds measured: 6x, 2.5x, 0.5x, so the margin is wide), once
    per machine (machine_bf16_speedup). W2S_CPU_BF16=1 / 0 overrides the measurement."""
    forced = os.environ.get("W2S_CPU_BF16")
    if forced is not None:
        if forced not in ("0", "1"):
            raise ValueError(f"W2S_CPU_BF16: must be 0 or 1, got {forced!r}")
        return forced == "1"
    return cpu_bf16_flags() and machine_bf16_speedup() >= BF16_MIN_SPEEDUP


def resolve_dtype(name: str, device: str):
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def trim_heap() -> bool:
    """Hand glibc's free heap pages back to the OS (malloc_trim(0)); True when it released any.
    The actors' allocator settings (cluster.config.MALLOC_ENV) never trim by themselves, so the
    staging buffers of a model load stayed mapped: 0.29 GB of the 1.41 GB a Gemma-3-270M actor held
    after loading (docs/measurements.md). False where the C library has no malloc_trim."""
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def default_threads(cfg: BackendConfig) -> int:
    if cfg.threads:
        return cfg.threads
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            if cpus:
                return max(1, math.ceil(cpus))
    except Exception:  # noqa: BLE001 - outside an actor
        pass
    return max(1, os.cpu_count() or 1)
