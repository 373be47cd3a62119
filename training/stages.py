"""Fine-tuning stages of the end-to-end run: config in, model directory out, skipped when complete.

  weak_sft/<name>        each weak model on ground truth of weak_train (its own shard, or its own
                         seed), when weak.finetune is on
  strong_ceiling         the strong model on ground truth of held_out (the ceiling)
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

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from actors.backend import BackendConfig
from training.examples import GEN_METHODS, REWARD_WEIGHTS, W2S_METHODS, ground_truth_examples, reward_examples, weak_label_examples
from training.trainer import TrainConfig, TrainJob, fit


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


def _fingerprint(job: TrainJob) -> str:
    payload = json.dumps({"spec": job.spec, "train": asdict(job.train), "method": job.method,
                          "weights": job.weak_weights, "chat": job.chat, "examples": job.examples},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def run_job(job: TrainJob, log=print) -> dict:
    """Idempotent fine-tuning job (Ray Train)."""
    out = Path(job.out_dir)
    marker = out / "_SUCCESS.json"
    fp = _fingerprint(job)
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done["fingerprint"] != fp:
            raise RuntimeError(f"{out} holds a model trained with another config or data; use a new run_dir or "
                               "delete that folder")
        log(f"train {job.name}: complete, skipped")
        return done
    out.mkdir(parents=True, exist_ok=True)
    summary = fit(job, log)
    summary["fingerprint"] = fp
    marker.write_text(json.dumps(summary, indent=1))
    return summary


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


def ceiling_stage(root: Path, strong: StrongConfig, template, log=print) -> dict:
    from pipelines.data import read_split

    ex = ground_truth_examples(read_split(root / "data" / "held_out"), template)
    job = TrainJob(name="strong_ceiling", spec=strong.spec, out_dir=str(root / "strong_ceiling"), train=strong.train,
                   examples=ex, chat=template.chat, answer=template.answer, num_options=_k(ex))
    return run_job(job, log)


def w2s_stage(root: Path, strong: StrongConfig, method: str, labels_dir: Path, names: list[str],
              weights: list[float], template, log=print, spec: str | None = None, out: Path | None = None) -> dict:
    from pipelines.annotate import read_weak_labels

    rows = read_weak_labels(labels_dir).to_pylist()
    ex = weak_label_examples(rows, method, names, template)
    name = f"strong_w2s_{method}" if out is None else "_".join(out.relative_to(root).parts)
    job = TrainJob(name=name, spec=spec or strong.spec,
                   out_dir=str(out or root / "strong_w2s" / method), train=strong.train, examples=ex,
                   method=method, weak_weights=weights, chat=template.chat, answer=template.answer,
                   num_options=_k(ex))
    return run_job(job, log)


def bootstrap_stage(root: Path, strong: StrongConfig, annotate_fn, names: list[str], weights: list[float],
                    template, log=print) -> dict:
    """Weak labels -> intermediate model 1 (naive CE) -> its labels on held_out -> ... -> the strong
    model (naive CE on the last labels). annotate_fn(model_dir, out_dir) labels held_out."""
    labels_dir, label_names, label_weights = root / "weak_labels", names, weights
    for j, spec in enumerate(strong.bootstrap):
        step_dir = root / "bootstrap" / f"step{j + 1}"
        inter = w2s_stage(root, strong, "naive", labels_dir, label_names, label_weights, template, log,
                          spec=spec, out=step_dir / "intermediate")
        labels_dir = step_dir / "labels"
        annotate_fn(inter["model_dir"], labels_dir)
        label_names, label_weights = ["intermediate"], [1.0]
    return w2s_stage(root, strong, "naive", labels_dir, label_names, label_weights, template, log,
                     out=root / "strong_w2s" / "bootstrap")


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
    truth), saved with its serving metadata (serving.scorer.save_reward_meta)."""
    from serving.scorer import save_reward_meta

    ex = reward_examples(rows, reward.format, target, reward.weight_by if target == "weak" else "none")
    job = TrainJob(name="_".join(out.relative_to(root).parts), spec=reward.spec or spec, out_dir=str(out),
                   train=reward.train, examples=ex, method="reward", num_options=2)
    summary = run_job(job, log)
    save_reward_meta(summary["model_dir"], "bt", format=reward.format, max_length=reward.train.max_length)
    return summary
