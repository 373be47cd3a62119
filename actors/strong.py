"""The strong-model role (`strong.*`) for inference: option scoring and log-probabilities.

Training of the strong model runs on Ray Train (training/); this actor serves the strong model
where a pipeline needs it next to the weak ensemble (its own GPU bundle in the same plan).
"""

from __future__ import annotations

from actors.base import BackendActor


class StrongActor(BackendActor):
    role = "strong"
