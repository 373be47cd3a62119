"""The weak-supervisor role (`weak.models[...]`): one Ray actor per weak model over a backend."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from actors.backend import BackendConfig, make_backend
from actors.registry import resolve

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class WeakModelConfig:
    spec: str = ""
    name: str = ""  # column suffix in weak_labels; default: derived from spec
    weight: float = 1.0  # weight in the ensemble's soft vote (seed 003 Eq. 2 w_i)
    backend: BackendConfig = field(default_factory=BackendConfig)

    def __post_init__(self):
        if not self.spec:
            raise ValueError("spec: missing (e.g. embedded:smollm2-135m-instruct, tiny:llama, a directory or hub id)")
        resolve(self.spec)  # unknown scheme / missing directory -> ModelSpecError (a ValueError)
        if not self.name:
            self.name = self.spec.split(":", 1)[-1].rstrip("/").split("/")[-1].replace(":", "-")
        if not _NAME.match(self.name):
            raise ValueError(f"name: {self.name!r} may hold only letters, digits, '_', '.', '-'")
        if self.weight <= 0:
            raise ValueError(f"weight: must be > 0, got {self.weight}")


@dataclass
class WeakConfig:
    models: list[WeakModelConfig] = field(default_factory=list)

    def __post_init__(self):
        if not self.models:
            raise ValueError("weak.models: at least one weak model is needed")
        names = [m.name for m in self.models]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"weak.models: duplicate name {sorted(dup)[0]!r}; give each model a distinct name")

    @property
    def weights(self) -> list[float]:
        total = sum(m.weight for m in self.models)
        return [m.weight / total for m in self.models]


class WeakActor:
    """Scores option-choice prompts with one weak model. Created by a WorkerGroup."""

    def __init__(self, name: str, spec: str, backend: BackendConfig):
        self.name = name
        self.backend = make_backend(spec, backend)

    def ready(self) -> dict:
        import ray

        return {"name": self.name, "pid": os.getpid(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), **self.backend.info()}

    def score_options(self, texts: list[str], labels: list[list[str]], chat: bool = False):
        return self.backend.score_options(texts, labels, chat)

    def sequence_logprobs(self, prompts: list[str], continuations: list[str]):
        return self.backend.sequence_logprobs(prompts, continuations)

    def tokens_seen(self) -> int:
        return getattr(self.backend, "tokens_seen", 0)
