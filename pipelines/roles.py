"""The run config's role sections: `weak` (the ensemble that labels), `strong` (the model that
learns), `reward` (the W2S reward model). Each model inside them has the one model-config shape
(`actors.weak.WeakModelConfig`: spec, name, weight, backend)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from actors.backend import BackendConfig
from actors.weak import WeakModelConfig
from training.examples import GEN_METHODS, REWARD_WEIGHTS, W2S_METHODS
from training.trainer import TrainConfig


def _weak_train_defaults():
    return TrainConfig(lr=5e-5, epochs=1.0)  # seed 003 Appendix C: weak models at 5e-5


@dataclass
class WeakConfig:
    models: list[WeakModelConfig] = field(default_factory=list)
    # fine-tune every weak model on the ground truth of weak_train first (weak_sft/); off: the
    # models label zero-shot (aligned instruct models as supervisors)
    finetune: bool = False
    train: TrainConfig = field(default_factory=_weak_train_defaults)
    diversify: str = "shard"  # shard: each weak model trains on its own part of weak_train; seed: all, own seed

    def __post_init__(self):
        if self.diversify not in ("shard", "seed"):
            raise ValueError(f"weak.diversify: must be shard or seed, got {self.diversify!r}")
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

    def labelling(self, root: Path) -> "WeakConfig":
        """The ensemble that labels: the fine-tuned copies (root/weak_sft/<name>/model) when
        finetune is on, else these models as they are."""
        if not self.finetune:
            return self
        return replace(self, models=[replace(m, spec=str(root / "weak_sft" / m.name / "model"),
                                             backend=replace(m.backend, head=self.train.head)) for m in self.models])


@dataclass
class StrongConfig:
    spec: str = "tiny:llama:7"
    train: TrainConfig = field(default_factory=TrainConfig)
    # W2S variants to train; each gets strong_w2s/<method>
    methods: list[str] = field(default_factory=lambda: ["naive", "aux_conf", "ensemble", "bayes", "rel_filter",
                                                        "rel_reweight"])
    # bootstrapping chain of intermediate model specs (empty: off)
    bootstrap: list[str] = field(default_factory=list)
    # inference backend of the pre-trained strong model where it annotates (SEAM's search)
    backend: BackendConfig = field(default_factory=BackendConfig)

    def __post_init__(self):
        from actors.registry import resolve

        if not self.spec:
            raise ValueError("spec: missing")
        resolve(self.spec)
        for m in self.methods:
            if m not in W2S_METHODS + GEN_METHODS:
                raise ValueError(f"methods: unknown method {m!r} (known: {', '.join(W2S_METHODS + GEN_METHODS)})")
        for b in self.bootstrap:
            resolve(b)


@dataclass
class RewardConfig:
    enabled: bool = False
    # bt: a scalar Bradley-Terry head trained on the weak labels; judge: the generative pairwise
    # judge strong_w2s/<judge_method> (the option-choice model), served as is
    kind: str = "bt"
    judge_method: str = "naive"
    spec: str = ""  # model to train the bt head from ("" = strong.spec)
    format: str = "{prompt}\nAnswer: {response}"  # the text a bt reward model reads
    weight_by: str = "none"  # none | confidence | reliability (per-pair loss weight)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(head="reward"))

    def __post_init__(self):
        if self.kind not in ("bt", "judge"):
            raise ValueError(f"reward.kind: must be bt or judge, got {self.kind!r}")
        if self.judge_method not in W2S_METHODS:
            raise ValueError(f"reward.judge_method: unknown method {self.judge_method!r}")
        if "{prompt}" not in self.format or "{response}" not in self.format:
            raise ValueError("reward.format: must contain {prompt} and {response}")
        if self.weight_by not in REWARD_WEIGHTS:
            raise ValueError(f"reward.weight_by: must be one of {REWARD_WEIGHTS}")
        if self.train.head != "reward":
            raise ValueError("reward.train.head: must be reward")
