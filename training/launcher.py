"""The one Ray Train launcher: what the SFT / W2S loop (training.sft_trainer) and the TRL DPO path
(training.dpo_trainer) share about running a job.

  guard       `run_once`: a job folder holding `_SUCCESS.json` with the same fingerprint is
              skipped (its manifest returned); another fingerprint, in `_SUCCESS.json` (a complete
              job) or in `_STARTED.json` (a partial one, whose checkpoints would be resumed into
              this job), is refused with `JobConflict`; nothing already written is overwritten
  history     <out_dir>/history.jsonl, one JSON row per optimizer step (`step` first), truncated
              to the resumed step when a run continues from a checkpoint
  reporting   `report`: metrics and (optionally) a checkpoint folder to Ray Train, from every rank;
              `restored_checkpoint`: the checkpoint Ray Train hands a (re)started worker
  trainer     `launch`: a TorchTrainer (ScalingConfig: workers, CPUs per worker, GPUs;
              RunConfig(name, storage_path) with FailureConfig(max_failures) and the last 2
              checkpoints kept), run to completion
  resume      Ray Train 2.60 (Train V2) refuses `resume_from_checkpoint`: a job resumes by running
              again under the same name and storage path, and Ray Train restores its newest
              checkpoint (and restarts failed workers from it, up to max_failures times)

Layering: training imports neither serving nor pipelines; pipelines.runner.StageConflict is a
JobConflict, so a pipeline stage can pass it as `run_once(conflict=...)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

SUCCESS = "_SUCCESS.json"
STARTED = "_STARTED.json"
HISTORY = "history.jsonl"


class JobConflict(RuntimeError):
    """A job folder holds output (complete or started) made with another config: nothing is overwritten."""


# ----------------------------------------------------------------------------- the guard


def fingerprint(payload: dict) -> str:
    """16 hex digits of the SHA-256 of the payload's canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_once(out_dir: str | Path, fp: str, fit: Callable[[], dict], *, label: str, what: str, log=print,
             conflict: type[JobConflict] = JobConflict) -> dict:
    """Run `fit()` once for this fingerprint: skipped when <out_dir>/_SUCCESS.json holds `fp`
    (logs '<label>: complete, skipped'); `conflict('<out_dir> holds <what>; ...')` when it, or
    _STARTED.json, holds another; else _STARTED.json is written, fit() runs (a partial run of the
    same job resumes from its checkpoints) and its summary, with the fingerprint, becomes
    _SUCCESS.json."""
    out = Path(out_dir)
    marker, started = out / SUCCESS, out / STARTED

    def refuse():
        return conflict(f"{out} holds {what}; use a new run_dir or delete that folder")

    if marker.is_file():
        done = json.loads(marker.read_text())
        if done.get("fingerprint") != fp:
            raise refuse()
        log(f"{label}: complete, skipped")
        return done
    if started.is_file() and json.loads(started.read_text()).get("fingerprint") != fp:
        raise refuse()
    out.mkdir(parents=True, exist_ok=True)
    started.write_text(json.dumps({"fingerprint": fp}))
    summary = fit()
    summary["fingerprint"] = fp
    marker.write_text(json.dumps(summary, indent=1))
    return summary


# ----------------------------------------------------------------------------- history


def history_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / HISTORY


def read_history(out_dir: str | Path) -> list[dict]:
    path = history_path(out_dir)
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def append_history(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def truncate_history(path: Path, start: int) -> None:
    """Keep the rows of steps <= start (0: none), as written; creates the folder if needed."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= start]
    path.write_text("".join(line + "\n" for line in kept))


# ----------------------------------------------------------------------------- Ray Train


def report(metrics: dict, checkpoint_dir: str | None = None) -> None:
    """ray.train.report from a worker (every rank calls it; Ray Train V2 requires that), with the
    folder as a checkpoint when given (it is copied to the run's storage)."""
    import ray.train

    ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
    ray.train.report(metrics, checkpoint=ckpt)


@contextlib.contextmanager
def restored_checkpoint():
    """The checkpoint Ray Train restores for this worker, as a local folder, or None (a fresh run)."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        yield None
        return
    with ckpt.as_directory() as d:
        yield d


def latest_checkpoint(storage: Path, marker: str, step_key: str) -> Path | None:
    """The newest complete Ray Train checkpoint folder under a job's storage: the folders holding
    `marker` (a JSON file with the step under `step_key`), by step."""
    found = sorted(Path(storage).glob(f"**/checkpoint_*/{marker}"),
                   key=lambda p: json.loads(p.read_text())[step_key])
    return found[-1].parent if found else None


def worker_env(use_gpu: bool, extra: dict | None, allocator: str) -> dict:
    """Environment of the Ray Train workers: the allocator (already resolved by
    training.optim_config.resolve_allocator; cluster.config.allocator_env), the caller's extras and,
    on CPU, DS_ACCELERATOR=cpu (explicit: DeepSpeed otherwise warns on every worker)."""
    from cluster.config import allocator_env

    env = {**allocator_env(allocator), **(extra or {})}
    if not use_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    return env


def torch_trainer(worker: Callable, job, cfg, *, name: str, storage: Path, use_gpu: bool, env: dict | None = None):
    """TorchTrainer running `worker(job)` on cfg.num_workers workers (an OptimConfig: num_workers,
    cpus_per_worker, max_failures); nccl on GPUs, gloo on CPUs; the run is `name` under `storage`."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from training.optim_config import resolve_allocator

    return TorchTrainer(
        worker, train_loop_config=job,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=str(storage),
                             worker_runtime_env={"env_vars": worker_env(use_gpu, env, resolve_allocator(cfg))},
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )


def launch(worker: Callable, job, cfg, *, name: str, storage: Path, use_gpu: bool, env: dict | None = None) -> float:
    """Run a job on Ray Train to completion (resuming its newest checkpoint when the same name and
    storage ran before); returns the seconds it took."""
    trainer = torch_trainer(worker, job, cfg, name=name, storage=storage, use_gpu=use_gpu, env=env)
    t0 = time.time()
    with controller_poll(cfg.controller_poll_s):
        trainer.fit()
    return time.time() - t0


POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


@contextlib.contextmanager
def controller_poll(seconds: float):
    """Ray Train V2's controller takes its poll interval from the driver's environment when fit()
    starts it (no argument exists), so the variable is set around fit() and restored after."""
    old = os.environ.get(POLL_ENV)
    os.environ[POLL_ENV] = f"{seconds:g}"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(POLL_ENV, None)
        else:
            os.environ[POLL_ENV] = old


# ----------------------------------------------------------------------------- one process


def init_single_process_group() -> None:
    """A world-size-1 gloo process group for DeepSpeed in this process (the local runners)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"})
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
