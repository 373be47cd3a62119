"""Cluster config (`cluster.*`): where Ray runs and how model roles share GPUs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# glibc returns large freed blocks to the OS and mmaps fresh (zeroed) pages for the next batch;
# with batches of varying shape that cost ~10% of a CPU forward (docs/measurements.md).
# Those settings reach only glibc's main arena. A thread's arena cannot hold a block over 64 MB, so
# in a thread (Ray Train runs the training loop in one) every such block (an embedding gradient,
# ZeRO's flat buffers) is a fresh mmap, page-faulted each step: the same loop ran at 0.65 of its
# main-thread speed under ZeRO-2, and the torch engine's worker took 27k page faults a second.
# MALLOC_ARENA_MAX=1 puts every thread on the main arena (0 faults a second there). jemalloc with
# purging off also serves them from its cache in any thread; Ray's wheel ships it for its own
# daemons (docs/measurements.md).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296",
              "MALLOC_TOP_PAD_": "1073741824", "MALLOC_ARENA_MAX": "1"}
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
ALLOCATORS = ("jemalloc", "glibc")


def jemalloc_path() -> str | None:
    """Ray's bundled jemalloc (ray/core/libjemalloc.so), or None where this Ray build lacks it."""
    import ray

    lib = Path(ray.__file__).parent / "core" / "libjemalloc.so"
    return str(lib) if lib.is_file() else None


def allocator_env(allocator: str) -> dict[str, str]:
    """Environment that selects a worker process's allocator: 'jemalloc' (preloaded, purging off;
    glibc's settings where Ray ships no jemalloc) or 'glibc' (MALLOC_ENV)."""
    if allocator not in ALLOCATORS:
        raise ValueError(f"allocator: must be one of {ALLOCATORS}, got {allocator!r}")
    lib = jemalloc_path() if allocator == "jemalloc" else None
    if lib is None:
        return dict(MALLOC_ENV)
    return {"LD_PRELOAD": lib, "MALLOC_CONF": JEMALLOC_CONF}


@dataclass
class ClusterConfig:
    # None: $RAY_ADDRESS if set (`ray job submit`), else an embedded local cluster.
    address: str | None = None
    # Local cluster only. num_gpus None: as many logical GPUs as the plan needs (CPU boxes).
    num_cpus: int | None = None
    num_gpus: int | None = None
    # GPU share of each model. 1.0: a GPU of its own; 0.5: two models on one GPU (they run one
    # after another); 2.0: two GPUs for one model (tensor parallel engines).
    weak_gpu: float = 1.0
    strong_gpu: float = 1.0
    # CPUs reserved per model actor; None: spread the cluster's CPUs over the actors, keeping
    # `reserve_cpus` free for Ray Data tasks and the driver.
    cpus_per_actor: float | None = None
    reserve_cpus: float = 0.5
    strategy: str = "PACK"  # placement group strategy: PACK | SPREAD | STRICT_PACK | STRICT_SPREAD
    ready_timeout_s: float = 600.0
    max_restarts: int = 3  # an actor that dies is restarted ...
    max_task_retries: int = 3  # ... and its in-flight calls retried, so no rows are lost
    # a streaming stage that still loses its actors (a node gone) places them again on the nodes
    # alive and resumes from the rows written, this many times (pipelines/runner.py)
    stage_restarts: int = 2
    # evaluation scores the trained strong models of a run together, each loaded once in its own
    # actor (a strong_gpu share each), this many per pass over the test split; 0: all in one pass
    eval_models: int = 0
    namespace: str = "w2s"
    # Local cluster only: Ray's dashboard, which serves the State API (`ray list actors`) and which
    # Ray Train 2.60's PlacementGroupCleaner polls every second; without it every training job logged
    # "Failed to query Ray Train Controller actor state" once a second (179 lines in a 4-min job)
    # and could not clean up after a crashed controller. Costs about 1 GB of resident memory (10
    # processes) and 2% of a core when idle (docs/measurements.md); false saves them.
    dashboard: bool = True
    # environment of model actors (set at process start, via the actor's runtime_env)
    actor_env: dict[str, str] = field(default_factory=lambda: dict(MALLOC_ENV))

    def __post_init__(self):
        for name in ("weak_gpu", "strong_gpu"):
            share = getattr(self, name)
            if not (0 < share <= 1 and (1 / share) == int(1 / share)) and not (share >= 1 and share == int(share)):
                raise ValueError(f"{name}: must be 1/n (0.5, 0.25, ...) or a whole number of GPUs, got {share}")
        if self.strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
            raise ValueError(f"strategy: unknown placement strategy {self.strategy!r}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError("num_cpus: must be >= 1")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise ValueError("num_gpus: must be >= 0")
        if self.cpus_per_actor is not None and self.cpus_per_actor <= 0:
            raise ValueError("cpus_per_actor: must be > 0")
        if self.ready_timeout_s <= 0:
            raise ValueError("ready_timeout_s: must be > 0")
        for name in ("max_restarts", "max_task_retries", "stage_restarts", "eval_models"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0")
