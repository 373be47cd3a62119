"""The one model-config shape of every model role: weak members, strong, bootstrap models, the
reward model, the policy (`{spec, name, weight, chat, backend}` in YAML)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from actors.backend import BackendConfig
from actors.registry import resolve

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def checked_name(spec: str, name: str) -> str:
    """A model's spec checked (resolvable) and its name: the given one, or one derived from the
    spec; names become column suffixes, so only letters, digits, '_', '.', '-'."""
    if not spec:
        raise ValueError("spec: missing (e.g. embedded:smollm2-135m-instruct, tiny:llama, a directory or hub id)")
    try:
        resolve(spec)  # unknown scheme / missing directory -> ModelSpecError (a ValueError)
    except ValueError as e:
        raise ValueError(f"spec: {e}") from None
    name = name or spec.split(":", 1)[-1].rstrip("/").split("/")[-1].replace(":", "-")
    if not _NAME.match(name):
        raise ValueError(f"name: {name!r} may hold only letters, digits, '_', '.', '-'")
    return name


@dataclass
class ModelConfig:
    spec: str = ""  # embedded:<name>, tiny:<arch>[:seed], a Hugging Face directory or hub id
    name: str = ""  # column suffix / actor name; default: derived from spec
    weight: float = 1.0  # weight in the weak ensemble's vote (seed 003 Eq. 2 w_i)
    chat: bool = False  # wrap prompts in the model's chat template where it generates (joint decoding)
    backend: BackendConfig = field(default_factory=BackendConfig)

    def __post_init__(self):
        self.name = checked_name(self.spec, self.name)
        if self.weight <= 0:
            raise ValueError(f"weight: must be > 0, got {self.weight}")


@dataclass
class DerivedModelConfig(ModelConfig):
    """A role whose model the run derives when `spec` is empty (the policy and the reward model
    start from strong.spec); a given spec is checked like any other."""

    def __post_init__(self):
        if self.spec:
            super().__post_init__()
        elif self.weight <= 0:
            raise ValueError(f"weight: must be > 0, got {self.weight}")
