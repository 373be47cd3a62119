"""The run config's role sections: `weak` (the ensemble that labels), `strong` (the model that
learns), `reward` (the W2S reward model). Each model inside them has the one model-config shape
(`actors.model_config.ModelConfig`: spec, name, weight, chat, backend); the strong section is
that shape plus its training and methods."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from actors.model_config import DerivedModelConfig, ModelConfig
from pipelines import methods as registry
from pipelines.methods.conflict import ConflictConfig
from training.examples import REWARD_WEIGHTS
from training.sft_config import TrainConfig


@dataclass
class WeakTrainConfig(TrainConfig):
    """weak.train: the training config with the weak supervisors' defaults (seed 003 Appendix C:
    weak models at 5e-5), kept when YAML sets only some fields."""
    lr: float = 5e-5


@dataclass
class WeakConfig:
    models: list[ModelConfig] = field(default_factory=list)
    # fine-tune every weak model on the ground truth of weak_train first (weak_sft/); off: the
    # models label zero-shot (aligned instruct models as supervisors)
    finetune: bool = False
    train: WeakTrainConfig = field(default_factory=WeakTrainConfig)
    diversify: str = "shard"  # shard: each weak model trains on its own part of weak_train; seed: all, own seed

    def __post_init__(self):
        if self.diversify not in ("shard", "seed"):
            raise ValueError(f"diversify: must be shard or seed, got {self.diversify!r}")
        if not self.models:
            raise ValueError("models: at least one weak model is needed")
        names = [m.name for m in self.models]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"models: duplicate name {sorted(dup)[0]!r}; give each model a distinct name")

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
class LMFinetuneConfig:
    """strong.lm_finetune: Burns et al.'s generative finetuning (seed 002, "UnSFT via LM loss"):
    the strong model first trained with the LM loss on the unlabelled text of `splits`
    (strong_lm/), then `methods` (and the ceiling) trained again from it, reported beside the same
    methods without it as "w2s <method> +lm" / "strong ceiling +lm"."""
    enabled: bool = False
    splits: list[str] = field(default_factory=lambda: ["weak_train", "held_out"])
    methods: list[str] = field(default_factory=lambda: ["naive"])
    ceiling: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        for s in self.splits:
            if s not in ("weak_train", "held_out"):
                raise ValueError(f"splits: must be weak_train or held_out (test would train on the test rows' "
                                 f"text), got {s!r}")
        if self.enabled and not self.splits:
            raise ValueError("splits: at least one split of unlabelled text is needed")
        for m in self.methods:
            found = registry.METHODS.get(m)
            if found is None or found.task != "choice":
                raise ValueError(f"methods: unknown option-choice method {m!r}")


@dataclass
class StrongConfig(ModelConfig):
    """The strong model (the model shape: spec, name, backend = its inference backend where it
    annotates or is evaluated), how it trains and which W2S methods run."""
    spec: str = "tiny:llama:7"
    train: TrainConfig = field(default_factory=TrainConfig)
    # W2S variants to train; each gets strong_w2s/<method>
    methods: list[str] = field(default_factory=lambda: ["naive", "aux_conf", "ensemble", "bayes", "rel_filter",
                                                        "rel_reweight"])
    # bootstrapping chain of intermediate models (empty: off), and the methods trained through it
    # (each step on the previous model's labels; "w2s bootstrap" for naive, "w2s bootstrap <m>")
    bootstrap: list[ModelConfig] = field(default_factory=list)
    bootstrap_methods: list[str] = field(default_factory=lambda: ["naive"])
    # the implicit conflict's extra data (method conflict_implicit, seed 002's deception setting)
    conflict: ConflictConfig = field(default_factory=ConflictConfig)
    lm_finetune: LMFinetuneConfig = field(default_factory=LMFinetuneConfig)

    def __post_init__(self):
        super().__post_init__()
        if self.lm_finetune.enabled and not set(self.lm_finetune.methods) <= set(self.methods):
            raise ValueError("lm_finetune.methods: each must also be in strong.methods (it is compared with it)")
        for key in ("methods", "bootstrap_methods"):
            for m in getattr(self, key):
                try:
                    found = registry.method(m)
                except ValueError as e:
                    raise ValueError(f"{key}: {e}") from None
                if key == "bootstrap_methods" and found.task != "choice":
                    raise ValueError(f"bootstrap_methods: {m} is not an option-choice method")
        if self.bootstrap and not self.bootstrap_methods:
            raise ValueError("bootstrap_methods: at least one method goes through the strong.bootstrap chain")


@dataclass
class RewardTrainConfig(TrainConfig):
    """reward.train: the training config with the scalar reward head as its default, so a YAML
    `reward.train: {lr: ...}` need not repeat `head: reward`."""
    head: str = "reward"


@dataclass
class RewardConfig(DerivedModelConfig):
    """The W2S reward model: the model shape (spec "" = strong.spec: the model the bt head is
    trained from; backend: how the reward models score pairs and answers) and its training."""
    enabled: bool = False
    # bt: a scalar Bradley-Terry head trained on the weak labels (the impartial judge: the same head
    # on ground truth); judge: the generative pairwise judge strong_w2s/<judge_method> (the
    # option-choice model), served as is (the impartial judge: strong_ceiling)
    kind: str = "bt"
    judge_method: str = "naive"
    format: str = "{prompt}\nAnswer: {response}"  # the text a bt reward model reads
    weight_by: str = "none"  # none | confidence | reliability (per-pair loss weight)
    train: RewardTrainConfig = field(default_factory=RewardTrainConfig)

    def __post_init__(self):
        super().__post_init__()
        if self.kind not in ("bt", "judge"):
            raise ValueError(f"kind: must be bt or judge, got {self.kind!r}")
        judge = registry.METHODS.get(self.judge_method)
        if judge is None or judge.task != "choice":
            raise ValueError(f"judge_method: unknown option-choice method {self.judge_method!r}")
        if "{prompt}" not in self.format or "{response}" not in self.format:
            raise ValueError("format: must contain {prompt} and {response}")
        if self.weight_by not in REWARD_WEIGHTS:
            raise ValueError(f"weight_by: must be one of {REWARD_WEIGHTS}")
        if self.train.head != "reward":
            raise ValueError("train.head: must be reward")
