"""DPO and conservative DPO (seed 003 Sec. 4.3) through TRL's DPOTrainer, on Ray Train with DeepSpeed.

Losses, with h = beta * [(log f(y_c) - log f_ref(y_c)) - (log f(y_r) - log f_ref(y_r))] over summed
completion-token log-probabilities (the reference f_ref is the SFT model the policy starts from):

    DPO  (Eq. 9):   L     = -log sigma(h)
    cDPO (Eq. 12):  L^eps = (1 - eps) * -log sigma(h) + eps * -log sigma(-h)

training.losses.cdpo_loss is that formula written out. TRL 1.16's `loss_type="sigmoid"` ignores
`label_smoothing` (eps would be dropped silently), so eps > 0 is configured as a weighted pair of
TRL losses, with ls = log sigma:

    robust(h) = [-(1 - eps) ls(h) + eps ls(-h)] / (1 - 2 eps)
    (2 - 2 eps) * sigmoid(h) - (1 - 2 eps) * robust(h)
        = -(2 - 2 eps) ls(h) + (1 - eps) ls(h) - eps ls(-h)
        = -(1 - eps) ls(h) - eps ls(-h)  = Eq. 12

i.e. loss_type=["sigmoid", "robust"], loss_weights=[2 - 2 eps, -(1 - 2 eps)], label_smoothing=eps
(`trl_loss_args`); eps = 0 uses plain "sigmoid". `sft_weight` w > 0 adds w x TRL's "sft" loss
(-mean log f(chosen tokens)), the SFT term of MACPO's DPO. tests/test_dpo.py checks TRL's loss against the
formula on a hand-made batch.

Reference log-probabilities are computed once, before training, by TRL (`precompute_ref_log_probs`):
the reference model is not kept in memory while the policy trains. When the reference is the policy
itself (the default: ref = the SFT model), the policy's own forward before the first step gives them.

Data: a Parquet file with TRL's preference columns `prompt, chosen, rejected` (strings; other columns
are ignored). `chat: true` wraps them as a user turn and an assistant turn (the tokenizer's chat
template); otherwise the strings are concatenated and EOS is appended to each completion.

Runners: `fit_dpo` runs DPOTrainer inside a Ray Train TorchTrainer (N workers, gloo on CPU / nccl on
GPU), with a DeepSpeed config (ZeRO 0-3, optional optimizer offload) handed to TRL; HF Trainer saves a
checkpoint every `checkpoint_every` steps, which is reported to Ray Train (`ray.train.report`) and
restored from when Ray restarts failed workers or when the same job runs again. `fit_dpo_local` runs
the same trainer in this process (world size 1), for debugging. `run_dpo_stage` is the idempotent
stage (`<out_dir>/_SUCCESS.json` with a fingerprint): training.launcher's guard, the one
pipelines.train_stages.run_job uses too; the TorchTrainer, history.jsonl, checkpoint reporting and
resume by name + storage are training.launcher's as well.

Settings: training.dpo_config.DPOConfig (optimisation fields shared with the SFT loop:
training.optim_config.OptimConfig). `precision` has the SFT loop's meaning
(training.optim_config.resolve_precision): `auto` is bf16 where the device supports it (CUDA with
bf16, a CPU with avx512_bf16 / amx_bf16 whose bf16 matmuls measured faster than fp32), else fp32.
bf16 is applied as

    GPU                    HF / TRL `bf16=True` (engine torch: autocast; engine deepspeed:
                           DeepSpeed's bf16 mode)
    CPU, engine torch      HF / TRL `bf16=True, use_cpu=True`: accelerate's CPU autocast, fp32
                           weights (runs with TRL 1.16 / transformers 5.19)
    CPU, engine deepspeed  torch.autocast(cpu, bf16) around TRL's forwards (the policy's loss and
                           the reference log-probs), DeepSpeed itself in fp32: what the SFT loop
                           does under DeepSpeed on CPU

Not `bf16=True` for DeepSpeed on CPU: that turns on DeepSpeed's bf16 mode, which runs on CPU but
casts the weights to bf16 (the saved model is bf16), and the reference log-probs (computed by
TRL's separate precompute engine, in another batch order) then differ from the untrained policy's
by bf16 noise: the first loss of a policy == reference run is 0.730 instead of log 2 (tiny model,
beta 0.5), i.e. h != 0 before any update.

Outputs under out_dir: model/ (HF directory + tokenizer), history.jsonl (per-step loss, rewards,
margins, accuracies), ray_train/ (Ray Train storage, checkpoints), checkpoints/ (HF Trainer's working
copies), datasets/ (Arrow caches: tokenized pairs, reference log-probs), _SUCCESS.json.

Normally started by `w2s run`; by hand:

    python -m training.dpo_trainer --policy tiny:llama:7 --data prefs.parquet --out /tmp/dpo \
        --max-steps 10 --lr 1e-3 --epsilon 0.1 [--local] [--workers 2 --zero 2]

Multi-node note: TRL writes the reference log-prob cache on rank 0 and every rank reads it, so
out_dir must be on a filesystem all nodes share (as the run directory is in `w2s run`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from training import launcher
from training.dpo_config import DPOConfig
from training.launcher import JobConflict, read_history
from training.optim_config import resolve_precision, resolve_use_gpu

PREF_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class DPOJob:
    """Everything one DPO run needs; passed whole to the Ray Train workers (no globals)."""
    name: str
    policy: str  # model spec or directory of the model to optimise (normally the SFT model)
    data: str  # Parquet with prompt / chosen / rejected
    out_dir: str
    config: DPOConfig = field(default_factory=DPOConfig)
    ref: str | None = None  # reference model spec; None: the policy's starting weights

    def __post_init__(self):
        from actors.registry import resolve

        if not self.name:
            raise ValueError("name: missing")
        resolve(self.policy)
        if self.ref is not None:
            resolve(self.ref)
        if not self.out_dir:
            raise ValueError("out_dir: missing")

    @property
    def ref_spec(self) -> str:
        return self.ref or self.policy


# ----------------------------------------------------------------------------- loss configuration


def trl_loss_args(beta: float, epsilon: float, sft_weight: float = 0.0) -> dict:
    """DPOConfig arguments for DPO (eps = 0) or cDPO (seed 003 Eq. 12); see the module docstring.
    sft_weight > 0 adds TRL's "sft" term, the mean NLL of the chosen completion's tokens, with that
    weight (MACPO's reference scripts: 0.2)."""
    if not 0 <= epsilon < 0.5:
        raise ValueError("epsilon: must be in [0, 0.5)")
    if sft_weight < 0:
        raise ValueError("sft_weight: must be >= 0")
    if epsilon == 0:
        out = {"beta": beta, "loss_type": ["sigmoid"], "loss_weights": None, "label_smoothing": 0.0}
    else:
        out = {"beta": beta, "loss_type": ["sigmoid", "robust"],
               "loss_weights": [2 - 2 * epsilon, -(1 - 2 * epsilon)], "label_smoothing": epsilon}
    if sft_weight:
        out["loss_weights"] = (out["loss_weights"] or [1.0]) + [sft_weight]
        out["loss_type"] = out["loss_type"] + ["sft"]
    return out


# ----------------------------------------------------------------------------- data


def read_preferences(path: str | Path):
    """The preference table (pyarrow), validated: prompt / chosen / rejected present, strings, no
    empty or missing value, at least one row. Other columns are kept (and ignored by training)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data: preference dataset {path} not found")
    table = pq.read_table(path)
    for col in PREF_COLUMNS:
        if col not in table.column_names:
            raise ValueError(f"data: column {col!r} missing in {path} (have {', '.join(table.column_names) or 'none'};"
                             f" TRL's preference format needs {', '.join(PREF_COLUMNS)})")
    if table.num_rows == 0:
        raise ValueError(f"data: {path} has no rows")
    for col in PREF_COLUMNS:
        arr = table.column(col)
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            raise ValueError(f"data: column {col!r} must hold strings, got {arr.type}")
        bad = pc.or_kleene(pc.is_null(arr), pc.equal(pc.utf8_trim_whitespace(arr), ""))
        bad = pc.fill_null(bad, True)
        if pc.any(bad).as_py():
            first = pc.index(bad, True).as_py()
            raise ValueError(f"data: column {col!r} has {pc.sum(bad).as_py()} empty or missing value(s) "
                             f"(first at row {first})")
    return table


def _file_sha(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_dataset(job: DPOJob):
    """datasets.Dataset of the pairs, file-backed under <out_dir>/datasets: TRL's tokenisation and
    reference log-prob caches are Arrow files next to it, which every rank finds at the same path."""
    from datasets import Dataset

    read_preferences(job.data)
    ds = Dataset.from_parquet(str(job.data), cache_dir=str(Path(job.out_dir) / "datasets"))
    ds = ds.select_columns(list(PREF_COLUMNS))
    if job.config.chat:
        ds = ds.map(_to_chat, desc="chat format")
    return ds


def _to_chat(row: dict) -> dict:
    return {"prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}]}


# ----------------------------------------------------------------------------- trainer


def _use_gpu(c: DPOConfig) -> bool:
    return resolve_use_gpu(c.use_gpu)


def _bf16(c: DPOConfig, on_gpu: bool) -> bool:
    """Whether the run computes in bf16 (training.optim_config.resolve_precision on this device)."""
    return resolve_precision(c.precision, "cuda" if on_gpu else "cpu") == "bf16"


def _cpu_autocast(c: DPOConfig, on_gpu: bool) -> bool:
    """bf16 on CPU under DeepSpeed: our own autocast, not HF's bf16 (DeepSpeed's bf16 mode; see the
    module docstring)."""
    return not on_gpu and c.engine == "deepspeed" and _bf16(c, on_gpu)


def deepspeed_config(c: DPOConfig) -> dict:
    """DeepSpeed config for HF Trainer ("auto": filled in from DPOConfig)."""
    zero: dict = {"stage": c.zero_stage}
    if c.offload:
        zero["offload_optimizer"] = {"device": "cpu"}
    if c.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    cfg = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
           "train_batch_size": "auto", "gradient_clipping": "auto", "zero_optimization": zero,
           "zero_allow_untested_optimizer": True, "bf16": {"enabled": "auto"}, "steps_per_print": 10**9,
           "wall_clock_breakdown": False}
    if c.offload:  # ZeRO-Offload refuses a client optimizer: DeepSpeed builds its CPU AdamW from here
        cfg["optimizer"] = {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                        "weight_decay": "auto"}}
    return cfg


def dpo_config(job: DPOJob, output_dir: str, on_gpu: bool | None = None, **overrides):
    """TRL's trl.DPOConfig for a job (overrides: any of its fields, e.g. for tests)."""
    from trl import DPOConfig as TRLDPOConfig

    c = job.config
    on_gpu = _use_gpu(c) if on_gpu is None else on_gpu
    schedule = {"cosine": "cosine", "linear": "linear",
                "constant": "constant_with_warmup" if c.warmup_steps else "constant"}[c.lr_schedule]
    kwargs = dict(
        output_dir=output_dir, learning_rate=c.lr, num_train_epochs=c.epochs, max_steps=c.max_steps or -1,
        per_device_train_batch_size=c.micro_batch, gradient_accumulation_steps=c.grad_accum,
        lr_scheduler_type=schedule, warmup_steps=c.warmup_steps, weight_decay=c.weight_decay,
        max_grad_norm=c.grad_clip, seed=c.seed, data_seed=c.seed,
        bf16=_bf16(c, on_gpu) and not _cpu_autocast(c, on_gpu), fp16=False,
        use_cpu=not on_gpu, gradient_checkpointing=c.gradient_checkpointing, max_length=c.max_length,
        logging_strategy="steps", logging_steps=1, save_strategy="steps" if c.checkpoint_every else "no",
        save_steps=c.checkpoint_every or 500, save_total_limit=1, report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, precompute_ref_log_probs=True, precompute_ref_batch_size=c.micro_batch,
        deepspeed=deepspeed_config(c) if c.engine == "deepspeed" else None,
        **trl_loss_args(c.beta, c.epsilon, c.sft_weight),
    )
    kwargs.update(overrides)
    return TRLDPOConfig(**kwargs)


def build_trainer(job: DPOJob, args, callbacks=()):
    """TRL DPOTrainer over the job's policy, reference and data; reference log-probs are computed
    here (before training), after which the reference model is dropped. bf16 under DeepSpeed on
    CPU: the trainer's forwards run under torch.autocast (module docstring)."""
    from trl import DPOTrainer

    from actors.registry import load_model

    trainer_cls = _autocast_trainer() if not args.bf16 and _cpu_autocast(job.config, not args.use_cpu) else DPOTrainer
    model, tok = load_model(job.policy, dtype=torch.float32)
    tok = _own_tokenizer(tok)
    ref_model = None
    if job.ref is not None and job.ref != job.policy:
        ref_model, _ = load_model(job.ref, dtype=torch.float32)
    if job.config.chat and not tok.chat_template:
        raise ValueError(f"chat: model {job.policy!r} has no chat template")
    with _main_process_first():
        ds = load_dataset(job)
    trainer = trainer_cls(model=model, ref_model=ref_model, args=args, train_dataset=ds, processing_class=tok,
                          callbacks=list(callbacks))
    trainer.ref_model = None  # reference log-probs are in the dataset now
    return trainer


def _autocast_trainer():
    """DPOTrainer with the policy's loss and the reference log-probs under CPU bf16 autocast
    (fp32 weights, gradients and optimizer state; DeepSpeed keeps an outer CPU autocast)."""
    from trl import DPOTrainer

    class AutocastDPOTrainer(DPOTrainer):
        def compute_loss(self, *args, **kwargs):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return super().compute_loss(*args, **kwargs)

        def compute_ref_log_probs(self, *args, **kwargs):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return super().compute_ref_log_probs(*args, **kwargs)

    return AutocastDPOTrainer


def _own_tokenizer(tok):
    """A private copy: TRL sets pad_token on it, and registry tokenizers are shared per process."""
    import copy

    return copy.deepcopy(tok)


@contextlib.contextmanager
def _main_process_first():
    import torch.distributed as dist

    multi = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if multi and dist.get_rank() != 0:
        dist.barrier()
    yield
    if multi and dist.get_rank() == 0:
        dist.barrier()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


# ----------------------------------------------------------------------------- callbacks


def history_callback(path: Path):
    """Appends every training log (loss, rewards/*, logps/*, lr, grad_norm) to history.jsonl (rank 0)."""
    from transformers import TrainerCallback

    class HistoryCallback(TrainerCallback):
        def __init__(self):
            self.t0 = time.time()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))},
                   "seconds": round(time.time() - self.t0, 3)}
            launcher.append_history(path, row)

    return HistoryCallback()


def _ray_report_callback():
    from ray.train.huggingface.transformers import RayTrainReportCallback

    class NodeReportCallback(RayTrainReportCallback):
        """Ray's RayTrainReportCallback, reporting the exact checkpoint just saved, once per node.

        The stock callback copies `get_last_checkpoint(output_dir)` on every rank, without waiting
        for the others to finish writing (DeepSpeed shards are per rank): here all ranks wait, then
        local rank 0 of each node hands the HF checkpoint folder to Ray Train (which merges the
        nodes' folders in storage) and the other ranks report metrics only. Every rank calls
        ray.train.report, as Ray Train V2 requires."""

        def on_save(self, args, state, control, **kwargs):
            _barrier()
            metrics = {"step": state.global_step}
            for log in state.log_history:
                metrics.update({k: v for k, v in log.items() if isinstance(v, (int, float))})
            ckpt = None
            if int(os.environ.get("LOCAL_RANK", "0")) == 0:
                ckpt = str(Path(args.output_dir) / f"checkpoint-{state.global_step}")
            launcher.report(metrics, ckpt)

    return NodeReportCallback()


# ----------------------------------------------------------------------------- the run (one worker)


def _resume_step(ckpt_dir: str | None) -> int:
    if not ckpt_dir:
        return 0
    state = Path(ckpt_dir) / "trainer_state.json"
    return json.loads(state.read_text())["global_step"] if state.is_file() else 0


def train_worker(job: DPOJob, resume: str | None, under_ray: bool) -> dict:
    """One rank of a DPO run: build TRL's trainer (DeepSpeed config when asked), train, save model/."""
    from ray.train.huggingface.transformers import prepare_trainer

    c = job.config
    on_gpu = _use_gpu(c)
    if c.engine == "deepspeed":
        import deepspeed

        # binds DeepSpeed's comm to the process group Ray Train (or _init_single_process_group) set up;
        # without it ZeRO-3's batch-size checks fail on CPU
        deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    out = Path(job.out_dir)
    ckpt_dir = out / "checkpoints"
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if under_ray and int(os.environ.get("LOCAL_RANK", "0")) == 0:
        # working copies from an earlier attempt: Ray Train's storage holds the checkpoint to resume from
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    history = launcher.history_path(out)
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
        launcher.truncate_history(history, _resume_step(resume))  # a fresh run (step 0): empty
    _barrier()
    callbacks = [history_callback(history)] + ([_ray_report_callback()] if under_ray else [])
    trainer = build_trainer(job, dpo_config(job, str(ckpt_dir), on_gpu), callbacks)
    if under_ray:
        trainer = prepare_trainer(trainer)
    result = trainer.train(resume_from_checkpoint=resume)
    _save_model(trainer, out)
    if under_ray and int(os.environ.get("LOCAL_RANK", "0")) == 0:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return {"steps": result.global_step}


def _save_model(trainer, out: Path) -> None:
    """<out_dir>/model (HF directory + tokenizer); ZeRO-3 weights are gathered by Trainer.save_model,
    which every rank calls; written to model.tmp first, then renamed."""
    tmp, final = out / "model.tmp", out / "model"
    if trainer.is_world_process_zero():
        shutil.rmtree(tmp, ignore_errors=True)
    _barrier()
    trainer.model.config.use_cache = True  # Trainer turned it off for training; generation wants it
    trainer.save_model(str(tmp))
    _barrier()
    if trainer.is_world_process_zero():
        for junk in ("training_args.bin", "README.md"):
            (tmp / junk).unlink(missing_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    _barrier()


def ray_train_worker(job: DPOJob) -> None:
    """Ray Train per-worker entry: resume from Ray Train's latest checkpoint when there is one."""
    with launcher.restored_checkpoint() as d:
        train_worker(job, d, under_ray=True)


# ----------------------------------------------------------------------------- runners


def fit_dpo(job: DPOJob, log=print) -> dict:
    """Run a DPO job on Ray Train (training.launcher: TorchTrainer, config.num_workers workers).
    Ray Train V2 restores its latest checkpoint when the same job (name, <out_dir>/ray_train) runs
    again, and restarts failed workers from it (max_failures)."""
    c = job.config
    table = read_preferences(job.data)  # fail fast, before any worker starts
    out = Path(job.out_dir).resolve()
    use_gpu = _use_gpu(c)
    # workers chdir elsewhere: absolute paths; they follow the driver's GPU decision
    c = replace(c, use_gpu="true" if use_gpu else "false")
    job = replace(job, out_dir=str(out), data=str(Path(job.data).resolve()), config=c)
    out.mkdir(parents=True, exist_ok=True)
    storage = out / "ray_train"
    resume = launcher.latest_checkpoint(storage, "trainer_state.json", "global_step")
    env = {"TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "false"),
           # Ray Train V2 routes print() to its logger as well: dill's stdout capture (datasets'
           # fingerprints) then leaks disassembled bytecode into the logs, and HF's log lines appear twice
           "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    log(f"dpo {job.name}: {table.num_rows} pairs, {c.num_workers} worker(s), engine {c.engine}"
        f"{f' ZeRO-{c.zero_stage}' if c.engine == 'deepspeed' else ''}, "
        f"{'cDPO eps ' + str(c.epsilon) if c.epsilon else 'DPO'}, beta {c.beta}{', resuming' if resume else ''}")
    seconds = launcher.launch(ray_train_worker, job, c, name=job.name, storage=storage, use_gpu=use_gpu, env=env)
    return _finish(job, table.num_rows, seconds, log)


def fit_dpo_local(job: DPOJob, log=print) -> dict:
    """The same trainer in this process (world size 1); resumes from the newest HF checkpoint under
    <out_dir>/checkpoints."""
    from transformers.trainer_utils import get_last_checkpoint

    table = read_preferences(job.data)
    out = Path(job.out_dir).resolve()
    job = replace(job, out_dir=str(out))
    out.mkdir(parents=True, exist_ok=True)
    if job.config.engine == "deepspeed":
        launcher.init_single_process_group()
    ckpts = out / "checkpoints"
    resume = get_last_checkpoint(str(ckpts)) if ckpts.is_dir() else None
    t0 = time.time()
    train_worker(job, resume, under_ray=False)
    return _finish(job, table.num_rows, time.time() - t0, log)


def _finish(job: DPOJob, pairs: int, seconds: float, log) -> dict:
    hist = read_history(job.out_dir)
    first = hist[0]["loss"] if hist else None
    last = hist[-1]["loss"] if hist else None
    summary = {"name": job.name, "policy": job.policy, "ref": job.ref_spec, "pairs": pairs, "steps": len(hist),
               "first_loss": first, "final_loss": last,
               "final_margin": hist[-1].get("rewards/margins") if hist else None,
               "final_accuracy": hist[-1].get("rewards/accuracies") if hist else None,
               "seconds": round(seconds, 1), "model_dir": str(Path(job.out_dir) / "model"),
               "config": asdict(job.config)}
    log(f"dpo {job.name}: {len(hist)} steps in {seconds:.1f} s, loss "
        f"{None if first is None else round(first, 4)} -> {None if last is None else round(last, 4)}")
    return summary


# ----------------------------------------------------------------------------- the stage


def fingerprint(job: DPOJob) -> str:
    return launcher.fingerprint({"kind": "dpo", "policy": job.policy, "ref": job.ref_spec, "config": asdict(job.config),
                                 "data_sha256": _file_sha(job.data)})


def run_dpo_stage(job: DPOJob, log=print, conflict: type[JobConflict] = JobConflict) -> dict:
    """Idempotent DPO stage (training.launcher.run_once): skipped when <out_dir>/_SUCCESS.json holds
    the same fingerprint (policy, reference, config, data bytes); a different fingerprint is refused
    (`conflict`, a JobConflict), for a complete run and for a partial one (_STARTED.json); a partial
    run of the same job resumes from its newest Ray Train checkpoint."""
    read_preferences(job.data)
    return launcher.run_once(job.out_dir, fingerprint(job), lambda: fit_dpo(job, log), label=f"dpo {job.name}",
                             what="a DPO run with another config, model or data", log=log, conflict=conflict)


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m training.dpo_trainer", description=__doc__.split("\n")[0])
    p.add_argument("--policy", required=True, help="model spec or directory (the SFT model)")
    p.add_argument("--ref", default=None, help="reference model spec (default: the policy)")
    p.add_argument("--data", required=True, help="Parquet with prompt / chosen / rejected")
    p.add_argument("--out", required=True)
    p.add_argument("--name", default="dpo")
    p.add_argument("--local", action="store_true", help="one process, no Ray")
    for f, typ in (("beta", float), ("epsilon", float), ("lr", float), ("epochs", float), ("max_steps", int),
                   ("micro_batch", int), ("grad_accum", int), ("num_workers", int), ("cpus_per_worker", float),
                   ("engine", str), ("zero_stage", int), ("max_length", int), ("checkpoint_every", int),
                   ("seed", int), ("precision", str), ("use_gpu", str)):
        p.add_argument("--" + f.replace("_", "-"), dest=f, type=typ, default=None)
    p.add_argument("--workers", dest="num_workers", type=int)
    p.add_argument("--zero", dest="zero_stage", type=int)
    p.add_argument("--chat", action="store_true")
    p.add_argument("--offload", action="store_true")
    a = p.parse_args(argv)
    fields = {k: v for k, v in vars(a).items() if k in DPOConfig.__dataclass_fields__ and v is not None}
    fields.update(chat=a.chat, offload=a.offload)
    job = DPOJob(name=a.name, policy=a.policy, ref=a.ref, data=a.data, out_dir=a.out,
                 config=DPOConfig(**fields))
    if a.local:
        print(json.dumps(fit_dpo_local(job), indent=1))
        return
    import ray

    ray.init(address=os.environ.get("RAY_ADDRESS", "local"), include_dashboard=False)
    print(json.dumps(run_dpo_stage(job), indent=1))


if __name__ == "__main__":
    main()
