"""The weak-supervisor role (`weak.models[...]`, each an actors.model_config.ModelConfig): one Ray
actor per weak model over a backend."""

from __future__ import annotations

from actors.base import BackendActor


class WeakActor(BackendActor):
    """Scores option-choice prompts with one weak model. Created by a WorkerGroup."""

    role = "weak"
