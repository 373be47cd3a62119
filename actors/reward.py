"""The reward-model role (`reward.*`): scores responses with the W2S reward model in-process.

Wraps actors.reward_model.RewardScorer (a Bradley-Terry scalar head or the generative pairwise judge),
the same code the Ray Serve deployment runs, so pipeline scores equal served scores.
"""

from __future__ import annotations

import os

from actors.backend import BackendConfig


class RewardActor:
    role = "reward"

    def __init__(self, name: str, model_dir: str, backend: BackendConfig):
        from actors.reward_model import RewardScorer

        self.name = name
        self.scorer = RewardScorer.from_dir(model_dir, backend)

    def ready(self) -> dict:
        import ray

        return {"role": self.role, "name": self.name, "pid": os.getpid(), "kind": self.scorer.kind,
                "node_id": ray.get_runtime_context().get_node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

    def score_rows(self, prompts: list[str], responses: list[list[str]]) -> list[list[float]]:
        """One score per response of each row, every row in one batched call: the scalar reward
        (bt) or the mean pairwise win probability within the row (judge)."""
        multi = [k for k, rs in enumerate(responses) if len(rs) > 1]  # one response: nothing to rank
        out = [[0.0] * len(rs) for rs in responses]
        for k, r in zip(multi, self.scorer.rank_rows([prompts[k] for k in multi], [responses[k] for k in multi])):
            out[k] = r["scores"]
        return out

    def tokens_seen(self) -> int:
        return getattr(self.scorer, "tokens_seen", 0)

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        """P(a preferred over b) per row (both orders averaged for the judge)."""
        return self.scorer.compare(prompts, a, b)
