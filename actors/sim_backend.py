"""A simulated model backend for scale tests: `sim:<name>[:<latency ms per batch>]`.

No model is loaded and nothing is computed: every call sleeps its fixed latency once per batch
(as one forward of a GPU-bound model would take) and returns pseudo-scores derived from a hash
of the model name and the text, so the same spec gives the same numbers in every process and on
every node. Actors that share one (logical) GPU take turns, as batches on one real GPU would: a
lock per node and GPU id serialises their sleeps.

It exists to measure the system (placement over many nodes, streaming, actor pools, memory as
rows grow: benchmarks/scale_sim.py, tests/test_multinode.py). Its labels are noise: never report
an accuracy measured with it.

    w2s run configs/tiny.yaml 'weak.models=[{spec: "sim:a:50"}, {spec: "sim:b:50"}]' ...
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time

import numpy as np

from actors.backend import BackendConfig, ModelBackend

_WORDS = ("yes", "no", "the", "a", "answer", "is", "because", "it", "one", "two", "true", "false")


def parse_sim(spec: str) -> tuple[str, float]:
    """(name, latency in seconds per batch) of a sim spec; a malformed one is a ValueError."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[0] != "sim" or not parts[1]:
        raise ValueError(f"bad sim spec {spec!r}: use sim:<name>[:<latency ms per batch>]")
    try:
        ms = float(parts[2]) if len(parts) == 3 else 0.0
    except ValueError:
        raise ValueError(f"bad sim spec {spec!r}: the latency must be a number of milliseconds") from None
    if ms < 0:
        raise ValueError(f"bad sim spec {spec!r}: the latency must be >= 0 ms")
    return parts[1], ms / 1000.0


def unit(*parts: str) -> float:
    """A deterministic number in [0, 1) from strings (the same in every process, unlike hash())."""
    h = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


class SimBackend(ModelBackend):
    def __init__(self, spec: str, cfg: BackendConfig):
        self.spec, self.cfg = spec, cfg
        self.name, self.latency_s = parse_sim(spec)
        self.tokens_seen = 0
        self.batches = 0

    def info(self) -> dict:
        return {"device": "sim", "dtype": "none", "spec": self.spec, "latency_s": self.latency_s}

    @contextlib.contextmanager
    def _batch(self, texts: list[str]):
        """One simulated forward: the latency, alone on this actor's GPU; tokens = words."""
        self.batches += 1
        self.tokens_seen += sum(len(t.split()) + 1 for t in texts)
        with _gpu_turn():
            time.sleep(self.latency_s)
        yield

    def _probs(self, text: str, options: list[str]) -> np.ndarray:
        logits = np.array([4.0 * unit(self.name, text, o) for o in options])
        e = np.exp(logits - logits.max())
        return e / e.sum()

    def score_options(self, texts: list[str], labels: list[list[str]], chat: bool = False) -> list[np.ndarray]:
        with self._batch(texts):
            return [self._probs(t, row) for t, row in zip(texts, labels)]

    def score_texts(self, texts: list[str], answers: list[list[str]], chat: bool = False) -> list[np.ndarray]:
        with self._batch(texts):
            return [self._probs(t, row) for t, row in zip(texts, answers)]

    def token_logprobs(self, prompts: list[str], continuations: list[str], chat: bool = False) -> list[list[float]]:
        with self._batch(prompts):
            return [[-0.1 - 3.0 * unit(self.name, p, c, str(i)) for i in range(max(len(c.split()), 1))]
                    for p, c in zip(prompts, continuations)]

    def sequence_logprobs(self, prompts: list[str], continuations: list[str],
                          chat: bool = False) -> list[tuple[float, int]]:
        return [(float(sum(t)), len(t)) for t in self.token_logprobs(prompts, continuations, chat)]

    def rewards(self, texts: list[str], chat: bool = False) -> list[float]:
        with self._batch(texts):
            return [4.0 * unit(self.name, t) - 2.0 for t in texts]

    def generate(self, prompts: list[str], num_samples: int = 1, max_new_tokens: int = 64,
                 temperature: float = 0.0, seed: int = 0, chat: bool = False,
                 stop: list[str] | None = None) -> list[list[tuple[str, float]]]:
        if temperature == 0 and num_samples > 1:
            raise ValueError("generate: greedy decoding gives one sequence; use temperature > 0 for samples")
        with self._batch(prompts):
            # greedy: one text per prompt; sampling: one per (seed, sample index)
            return [[self._text(p, max_new_tokens, *([str(seed), str(j)] if temperature > 0 else []))
                     for j in range(num_samples)] for p in prompts]

    def sample_chunks(self, prompts: list[str], partials: list[str], num_samples: int, max_tokens: list[int],
                      temperature: float = 0.7, top_k: int = 0, seed: int = 0, chat: bool = False,
                      stop: list[str] | None = None) -> list[list[tuple[str, int, bool]]]:
        """Words as tokens; a chunk ends (as if by the end token) with probability 0.2 per chunk."""
        with self._batch(prompts):
            out = []
            for p, part, m in zip(prompts, partials, max_tokens):
                row = []
                for j in range(num_samples):
                    words = [_WORDS[int(unit(self.name, p, part, str(seed), str(j), str(i)) * len(_WORDS))]
                             for i in range(m)]
                    row.append((" " + " ".join(words) if words else "", len(words),
                                unit(self.name, p, part, str(seed), str(j), "end") < 0.2))
                out.append(row)
            return out

    def _text(self, prompt: str, n: int, *salt: str) -> tuple[str, float]:
        words = [_WORDS[int(unit(self.name, prompt, str(i), *salt) * len(_WORDS))] for i in range(min(n, 8))]
        return " " + " ".join(words), -0.5 * len(words)


@contextlib.contextmanager
def _gpu_turn():
    """Serialise simulated batches of the actors that share one logical GPU of one node (a
    file lock per node and GPU id); no lock without a GPU (CPU-only actors run side by side)."""
    try:
        import ray

        gpus = [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []
        node = ray.get_runtime_context().get_node_id() if gpus else ""
    except Exception:  # noqa: BLE001 - outside Ray: no GPU to share
        gpus, node = [], ""
    if not gpus:
        yield
        return
    import fcntl

    path = os.path.join(tempfile.gettempdir(), f"w2s-sim-{node[:12]}-gpu{min(gpus)}.lock")
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
