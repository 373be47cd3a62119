"""`TrainConfig`: the settings of one fine-tuning run of training.sft_trainer (weak supervisors,
the strong ceiling, the strong model on weak labels, reward models).

The optimisation fields and their validator are `training.optim_config.OptimConfig`'s; this class
adds the head, the end-of-run checkpoint and the W2S loss parameters (YAML: `weak.train.*`,
`strong.train.*`, `reward.train.*`).
"""

from __future__ import annotations

from dataclasses import dataclass

from training.optim_config import OptimConfig, check

HEADS = ("lm", "classifier", "reward")


@dataclass
class TrainConfig(OptimConfig):
    # lm: next-token prediction of the option label; classifier: K-way head; reward: a scalar
    # Bradley-Terry reward r(prompt, response) per option (preference pairs, examples with "texts")
    head: str = "lm"
    lm_normalize: str = "vocab"  # lm head: log-probs over the vocabulary (CLM) or over the K labels
    checkpoint_at_end: bool = True  # full state (model + optimizer) after the last step
    # answer-text options: the prompt once per row and the K options as continuations in one
    # packed sequence with a block mask (actors/packing.py), instead of K prompt + option sequences
    shared_prompt: bool = True
    # W2S loss parameters
    gamma_max: float = 0.5  # aux confidence loss (seed 003 Eq. 1 / 5)
    gamma_warmup_frac: float = 0.2
    edl_lambda: float = 1.0  # EDL KL regulariser (seed 003 Appendix B) ...
    edl_anneal_frac: float = 0.5  # ... annealed linearly over this fraction of the steps
    conflict_alpha: float = 1.0  # explicit conflict term of seed 002's deception setting (not tuned)
    # token-level soft labels (generation tasks, method soft_tokens; seed 003 section 4.2):
    # the per-token loss (ce: Eq. 1, edl: Eq. 5 with gamma_max / edl_lambda as above), how a word
    # score is split onto the strong tokens (training/soft_labels.py), the EDL KL coefficient
    # against a vocabulary-sized Dirichlet, and the per-token clamp (0: none)
    soft_loss: str = "ce"
    soft_split: str = "product"
    soft_kl_coef: float = 1.0
    soft_clamp_max: float = 0.0

    # fields left out of a job's fingerprint while at their default (added after runs existed)
    COMPAT_DEFAULTS = ("conflict_alpha",)

    def __post_init__(self):
        super().__post_init__()
        check([
            (self.head in HEADS, "head", f"must be one of {HEADS}"),
            (self.lm_normalize in ("vocab", "options"), "lm_normalize", "must be vocab or options"),
            (0 <= self.gamma_max <= 1, "gamma_max", "must be in [0, 1]"),
            (0 < self.gamma_warmup_frac <= 1, "gamma_warmup_frac", "must be in (0, 1]"),
            (self.edl_lambda >= 0, "edl_lambda", "must be >= 0"),
            (0 < self.edl_anneal_frac <= 1, "edl_anneal_frac", "must be in (0, 1]"),
            (self.conflict_alpha >= 0, "conflict_alpha", "must be >= 0"),
            (self.soft_loss in ("ce", "edl"), "soft_loss", "must be ce or edl"),
            (self.soft_split in ("product", "eq8"), "soft_split", "must be product or eq8"),
            (self.soft_kl_coef >= 0, "soft_kl_coef", "must be >= 0"),
            (self.soft_clamp_max >= 0, "soft_clamp_max", "must be >= 0 (0: no clamp)"),
        ])
