"""Fine-tuning stages of the end-to-end run: config in, model directory out, skipped when complete.

  weak_sft/<name>        each weak model on ground truth of weak_train (its own shard, or its own
                         seed), when weak.finetune is on
  strong_lm              the strong model with the LM loss on unlabelled task text (strong.lm_finetune)
  strong_ceiling         the strong model on ground truth of held_out (the ceiling; strong_ceiling_lm
                         from strong_lm as well)
  strong_w2s/<method>    the strong model on the weak labels of held_out, one folder per method
  strong_w2s/bootstrap   Burns et al.'s bootstrapping: weak labels -> intermediate model(s) ->
                         their labels -> the strong model (strong.bootstrap lists the chain)
  reward_model           the W2S reward model: a Bradley-Terry scalar head on the weak labels of
                         held_out preference pairs (or the generative judge strong_w2s/<method>)
  reward_ceiling         the same head on ground truth: the impartial judge of the alignment stage

A job whose folder holds `_SUCCESS.json` with the same fingerprint is skipped; a different
fingerprint is refused (nothing already written is overwritten); a partial job resumes from its
newest Ray Train checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from pipelines.roles import RewardConfig, StrongConfig
from pipelines.runner import StageConflict
from training.examples import ground_truth_examples, lm_examples, reward_examples
from training.launcher import fingerprint, run_once
from training.sft_config import TrainConfig
from training.sft_trainer import TrainJob, fit


def _fingerprint(job: TrainJob) -> str:
    train = asdict(job.train)
    # a field added after runs existed leaves the fingerprint as before while at its default, so
    # a run_dir trained before it existed is still recognised rather than refused
    for name in job.train.COMPAT_DEFAULTS:
        if train.get(name) == getattr(type(job.train), name):
            train.pop(name)
    return fingerprint({"spec": job.spec, "train": train, "method": job.method,
                        "weights": job.weak_weights, "chat": job.chat, "examples": job.examples})


def run_job(job: TrainJob, log=print) -> dict:
    """Idempotent fine-tuning job (Ray Train): training.launcher's guard (skip when complete,
    StageConflict for another config, complete or started; a partial job resumes)."""
    return run_once(job.out_dir, _fingerprint(job), lambda: fit(job, log), label=f"train {job.name}",
                    what="a model trained with another config or data", log=log, conflict=StageConflict)


def _k(examples: list[dict]) -> int:
    ks = {len(e["labels"]) for e in examples}
    if len(ks) != 1:
        raise ValueError(f"training rows differ in their number of options {sorted(ks)}; one task per run")
    return ks.pop()


def weak_sft_stage(root: Path, weak, template, log=print) -> dict[str, str]:
    """Fine-tune every weak model on weak_train ground truth; returns name -> model directory."""
    from pipelines.data import read_split

    rows = read_split(root / "data" / "weak_train")
    n = len(weak.models)
    dirs = {}
    for i, m in enumerate(weak.models):
        part = rows[i::n] if weak.diversify == "shard" else rows
        train = TrainConfig(**{**asdict(weak.train), "seed": weak.train.seed + i})
        ex = ground_truth_examples(part, template)
        job = TrainJob(name=f"weak_{m.name}", spec=m.spec, out_dir=str(root / "weak_sft" / m.name), train=train,
                       examples=ex, chat=template.chat, answer=template.answer, num_options=_k(ex))
        dirs[m.name] = run_job(job, log)["model_dir"]
    return dirs


def ceiling_stage(root: Path, strong: StrongConfig, template, log=print, spec: str | None = None,
                  out: str = "strong_ceiling") -> dict:
    from pipelines.data import read_split

    ex = ground_truth_examples(read_split(root / "data" / "held_out"), template)
    job = TrainJob(name=out, spec=spec or strong.spec, out_dir=str(root / out), train=strong.train,
                   examples=ex, chat=template.chat, answer=template.answer, num_options=_k(ex))
    return run_job(job, log)


def lm_stage(root: Path, strong: StrongConfig, template, log=print) -> dict:
    """strong_lm: the strong model trained with the LM loss on the unlabelled text of
    strong.lm_finetune.splits (training.examples.lm_examples)."""
    from pipelines.data import read_split

    rows = [r for s in strong.lm_finetune.splits for r in read_split(root / "data" / s)]
    job = TrainJob(name="strong_lm", spec=strong.spec, out_dir=str(root / "strong_lm"), train=strong.lm_finetune.train,
                   examples=lm_examples(rows, template), method="lm", answer="sequence")
    return run_job(job, log)


def w2s_stage(root: Path, strong: StrongConfig, method, examples: list[dict], weights: list[float], template,
              log=print, spec: str | None = None, out: Path | None = None) -> dict:
    """The strong model (or `spec`) trained on a method's examples with the method's loss
    (a pipelines.methods.Method: name, loss, answer)."""
    answer = method.answer or template.answer
    seq = answer == "sequence"  # target texts: no options, no chat template of the option prompts
    name = f"strong_w2s_{method.name}" if out is None else "_".join(out.relative_to(root).parts)
    job = TrainJob(name=name, spec=spec or strong.spec, out_dir=str(out or root / "strong_w2s" / method.name),
                   train=strong.train, examples=examples, method=method.name,
                   weak_weights=[1.0] if seq else weights, chat=template.chat and not seq, answer=answer,
                   num_options=2 if seq else _k(examples), loss=method.loss)
    return run_job(job, log)


def bootstrap_stage(root: Path, strong: StrongConfig, rows: list[dict], method, examples_fn, annotate_fn,
                    weights: list[float], template, log=print, name: str = "bootstrap") -> dict:
    """Weak labels -> intermediate model 1 (`method`: naive CE for Burns et al.) -> its labels on
    held_out -> ... -> the strong model (the same method on the last labels), in root/<name>/ and
    strong_w2s/<name>. examples_fn(rows) builds the method's examples; annotate_fn(model_dir,
    out_dir) labels held_out with an intermediate model."""
    from pipelines.annotate import read_weak_labels

    label_weights = weights
    for j, model in enumerate(strong.bootstrap):
        step_dir = root / name / f"step{j + 1}"
        inter = w2s_stage(root, strong, method, examples_fn(rows), label_weights, template, log,
                          spec=model.spec, out=step_dir / "intermediate")
        annotate_fn(inter["model_dir"], step_dir / "labels")
        rows = read_weak_labels(step_dir / "labels").to_pylist()
        label_weights = [1.0]
    return w2s_stage(root, strong, method, examples_fn(rows), label_weights, template, log,
                     out=root / "strong_w2s" / name)


def sequence_stage(root: Path, strong: StrongConfig, method: str, examples: list[dict], out: Path,
                   log=print) -> dict:
    """The strong model fine-tuned on target texts (generation tasks): SFT on the reference
    (the ceiling), on a weak top beam or the joint target, or token-level soft labels."""
    job = TrainJob(name="_".join(out.relative_to(root).parts), spec=strong.spec, out_dir=str(out),
                   train=strong.train, examples=examples, method=method, answer="sequence")
    return run_job(job, log)


def reward_stage(root: Path, reward: RewardConfig, spec: str, rows: list[dict], target: str, out: Path,
                 log=print) -> dict:
    """A Bradley-Terry reward model on preference pairs (target weak: weak labels; truth: ground
    truth), saved with its serving metadata (actors.reward_model.save_reward_meta)."""
    from actors.reward_model import save_reward_meta

    ex = reward_examples(rows, reward.format, target, reward.weight_by if target == "weak" else "none")
    job = TrainJob(name="_".join(out.relative_to(root).parts), spec=reward.spec or spec, out_dir=str(out),
                   train=reward.train, examples=ex, method="reward", num_options=2)
    summary = run_job(job, log)
    save_reward_meta(summary["model_dir"], "bt", format=reward.format, max_length=reward.train.max_length)
    return summary
