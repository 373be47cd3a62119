"""`DPOConfig`: the settings of one DPO / conservative DPO run of training.dpo_trainer (YAML:
`align.dpo.*`).

The optimisation fields and their validator are `training.optim_config.OptimConfig`'s (with DPO's
own defaults for lr, micro_batch and max_length); this class adds the DPO loss (beta, epsilon),
the chat format and gradient checkpointing. Not TRL's `trl.DPOConfig`: training.dpo_trainer
builds that one from this (`dpo_config`).
"""

from __future__ import annotations

from dataclasses import dataclass

from training.optim_config import OptimConfig, check


@dataclass
class DPOConfig(OptimConfig):
    lr: float = 5e-7
    micro_batch: int = 4  # pairs per forward on each worker (global batch: x grad_accum x num_workers)
    max_length: int = 1024  # prompt + completion tokens (TRL truncates the end)
    beta: float = 0.1  # KL strength (Eq. 9)
    epsilon: float = 0.0  # cDPO label-flip probability (Eq. 12), in [0, 0.5); 0: plain DPO
    sft_weight: float = 0.0  # weight of an added NLL term on the chosen completion (MACPO: 0.2); 0: none
    gradient_checkpointing: bool = False
    chat: bool = False  # wrap prompt / completions in the tokenizer's chat template

    def __post_init__(self):
        super().__post_init__()
        check([
            (self.beta > 0, "beta", "must be > 0"),
            (0 <= self.epsilon < 0.5, "epsilon", "must be in [0, 0.5)"),
            (self.sft_weight >= 0, "sft_weight", "must be >= 0"),
        ])
