"""The optimisation settings every training job shares: `OptimConfig`, its one validator, and how
`precision` and `use_gpu` resolve on a device.

`training.sft_config.TrainConfig` (SFT / W2S loop) and `training.dpo_config.DPOConfig` (TRL DPO)
extend it with their own fields; YAML keys are the fields' names (`strong.train.lr`,
`align.dpo.lr`, ...). Each check raises `ValueError("<field>: <message>")` naming the one field
that is wrong; cluster.loader prefixes the dotted path.

precision (one meaning for both trainers, `resolve_precision`):
  auto   bf16 where the device supports it and it pays: CUDA with bf16, or a CPU with avx512_bf16 /
         amx_bf16 whose bf16 matmuls measured >= 1.25x fp32 (actors.backend.cpu_supports_bf16; an
         Intel Xeon with AMX hidden ran bf16 at 0.5x fp32), else fp32
  bf16   bf16 mixed precision
  fp32   full precision
How each trainer applies bf16 is in its own module (training.sft_trainer: torch.autocast around
the forward; training.dpo_trainer: HF / TRL mixed precision).
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.config import ALLOCATORS as WORKER_ALLOCATORS

ENGINES = ("deepspeed", "torch")
PRECISIONS = ("auto", "bf16", "fp32")
LR_SCHEDULES = ("cosine", "linear", "constant")
USE_GPU = ("auto", "true", "false")
ALLOCATORS = ("auto", *WORKER_ALLOCATORS)  # auto: resolve_allocator


@dataclass
class OptimConfig:
    lr: float = 1e-5
    epochs: float = 1.0
    max_steps: int = 0  # > 0: exactly this many optimizer steps (overrides epochs)
    micro_batch: int = 8  # rows per forward on each worker
    grad_accum: int = 1  # global batch = micro_batch x grad_accum x num_workers
    num_workers: int = 1  # Ray Train workers (data parallel)
    cpus_per_worker: float = 1.0
    use_gpu: str = "auto"  # auto: when CUDA is available to the driver | true | false
    engine: str = "deepspeed"  # deepspeed | torch (plain AdamW, no ZeRO)
    zero_stage: int = 2
    offload: bool = False  # ZeRO optimizer state offload to CPU (DeepSpeed's CPU AdamW)
    precision: str = "auto"  # auto: bf16 where the device supports it, else fp32 | bf16 | fp32
    max_length: int = 512  # tokens per sequence
    lr_schedule: str = "cosine"  # cosine | linear | constant
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    checkpoint_every: int = 0  # steps between checkpoints (0: none in between)
    max_failures: int = 1  # Ray Train restarts the workers from the last checkpoint this often
    # Ray Train workers' allocator: auto (jemalloc under DeepSpeed, glibc otherwise) | jemalloc | glibc;
    # why: cluster.config and resolve_allocator
    allocator: str = "auto"
    # seconds between Ray Train's controller polls of its workers (Ray's default 2 s): a finished
    # job waited 3.0-3.7 s for the next poll and shutdown, 0.4-1.0 s at 0.5 (docs/measurements.md)
    controller_poll_s: float = 0.5
    seed: int = 0

    def __post_init__(self):
        check([
            (self.lr > 0, "lr", "must be > 0"),
            (self.epochs > 0 or self.max_steps > 0, "epochs", "must be > 0"),
            (self.max_steps >= 0, "max_steps", "must be >= 0"),
            (self.micro_batch >= 1, "micro_batch", "must be >= 1"),
            (self.grad_accum >= 1, "grad_accum", "must be >= 1"),
            (self.num_workers >= 1, "num_workers", "must be >= 1"),
            (self.cpus_per_worker > 0, "cpus_per_worker", "must be > 0"),
            (self.use_gpu in USE_GPU, "use_gpu", "must be auto, true or false"),
            (self.engine in ENGINES, "engine", f"must be one of {ENGINES}"),
            (self.zero_stage in (0, 1, 2, 3), "zero_stage", "must be 0, 1, 2 or 3"),
            (not (self.offload and self.engine != "deepspeed"), "offload", "needs engine: deepspeed"),
            (self.precision in PRECISIONS, "precision", "must be auto, bf16 or fp32"),
            (self.max_length >= 8, "max_length", "must be >= 8"),
            (self.lr_schedule in LR_SCHEDULES, "lr_schedule", "must be cosine, linear or constant"),
            (self.warmup_steps >= 0, "warmup_steps", "must be >= 0"),
            (self.weight_decay >= 0, "weight_decay", "must be >= 0"),
            (self.grad_clip > 0, "grad_clip", "must be > 0"),
            (self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0"),
            (self.max_failures >= 0, "max_failures", "must be >= 0"),
            (self.allocator in ALLOCATORS, "allocator", "must be auto, jemalloc or glibc"),
            (self.controller_poll_s > 0, "controller_poll_s", "must be > 0"),
            (self.seed >= 0, "seed", "must be >= 0"),  # numpy's generators refuse negative seeds
        ])


def check(checks: list[tuple[bool, str, str]]) -> None:
    """Raise ValueError('<field>: <message>') for the first failed (ok, field, message)."""
    for ok, name, msg in checks:
        if not ok:
            raise ValueError(f"{name}: {msg}")


def device_supports_bf16(device: str) -> bool:
    """CUDA with bf16, or a CPU where bf16 is measured faster (actors.backend.cpu_supports_bf16)."""
    import torch

    from actors import backend

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device == "cpu":
        return backend.cpu_supports_bf16()
    return False


def resolve_precision(precision: str, device: str) -> str:
    """'bf16' or 'fp32' for a config's `precision` on a device ('cpu', 'cuda', 'cuda:0')."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: must be auto, bf16 or fp32, got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if device_supports_bf16(device) else "fp32"


def resolve_use_gpu(use_gpu: str) -> bool:
    """`use_gpu` on this process: true, false, or (auto) whether CUDA is available."""
    import torch

    return use_gpu == "true" or (use_gpu == "auto" and torch.cuda.is_available())


def resolve_allocator(cfg: OptimConfig) -> str:
    """The Ray Train workers' allocator for `allocator: auto`: jemalloc under DeepSpeed (ZeRO-2 on
    one worker ran at 0.97-1.01 of in-process with it, 0.54 with glibc), glibc for engine torch
    (jemalloc's speed there was within noise of glibc's, purging off or with a 10 s decay, and
    purging off cost 1.5 GB more peak memory: docs/measurements.md)."""
    if cfg.allocator != "auto":
        return cfg.allocator
    return "jemalloc" if cfg.engine == "deepspeed" else "glibc"
