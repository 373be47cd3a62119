"""The weak-supervisor role (`weak.models[...]`): one Ray actor per weak model over a backend."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from actors.backend import BackendConfig
from actors.base import BackendActor
from actors.registry import resolve

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def checked_name(spec: str, name: str) -> str:
    """A weak model's spec checked (resolvable) and its name: the given one, or one derived from
    the spec; names become column suffixes, so only letters, digits, '_', '.', '-'."""
    if not spec:
        raise ValueError("spec: missing (e.g. embedded:smollm2-135m-instruct, tiny:llama, a directory or hub id)")
    resolve(spec)  # unknown scheme / missing directory -> ModelSpecError (a ValueError)
    name = name or spec.split(":", 1)[-1].rstrip("/").split("/")[-1].replace(":", "-")
    if not _NAME.match(name):
        raise ValueError(f"name: {name!r} may hold only letters, digits, '_', '.', '-'")
    return name


@dataclass
class WeakModelConfig:
    spec: str = ""
    name: str = ""  # column suffix in weak_labels; default: derived from spec
    weight: float = 1.0  # weight in the ensemble's soft vote (seed 003 Eq. 2 w_i)
    backend: BackendConfig = field(default_factory=BackendConfig)

    def __post_init__(self):
        self.name = checked_name(self.spec, self.name)
        if self.weight <= 0:
            raise ValueError(f"weight: must be > 0, got {self.weight}")


class WeakActor(BackendActor):
    """Scores option-choice prompts with one weak model. Created by a WorkerGroup."""

    role = "weak"
