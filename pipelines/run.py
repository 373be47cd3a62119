"""The end-to-end run: one config chains the stages, each skipped when its output is complete.

    w2s run configs/quickstart.yaml [key=value ...]

data -> weak_sft (weak.finetune) -> weak_labels (annotate.method; seam: SEAM search + baselines)
-> strong_ceiling -> strong_w2s/<method> for
every strong.methods (+ bootstrap when strong.bootstrap lists intermediate models) -> eval (test
accuracy of every model, PGR, deception) -> report (report.md, metrics.json, PNG plots).
task: generation runs pipelines/gen_run.py's stages instead (joint decoding, SFT, soft tokens).
On a preference task (K = 2) with reward.enabled / align.enabled, the alignment stages follow
strong_w2s (pipelines/align.py): reward_model + reward_ceiling -> dpo_pairs -> dpo -> align_eval.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from actors.backend import BackendConfig
from actors.model_config import ModelConfig
from cluster.config import ClusterConfig
from pipelines.align import AlignConfig
from pipelines.annotate import AnnotateConfig, annotate_stage
from pipelines.data import DataConfig, prepare_data
from pipelines.generation import GenDataConfig
from pipelines.joint_annotate import JointConfig
from actors.prompts import TemplateConfig
from pipelines.seam import SeamConfig
from pipelines.seam_annotate import SeamStageConfig
from pipelines import methods
from pipelines.roles import RewardConfig, StrongConfig, WeakConfig


@dataclass
class RunConfig:
    weak: WeakConfig
    run_dir: str = "runs/default"
    # choice: option-choice / preference rows (data.*); generation: prompt + reference rows
    # (gen_data.*), joint decoding as the weak labels (joint.*), pipelines/gen_run.py
    task: str = "choice"
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    strong: StrongConfig = field(default_factory=StrongConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    # annotate.method=seam: the FF-tree search (strong.spec searches, weak.models[0] decides)
    seam: SeamConfig = field(default_factory=SeamConfig)
    seam_stage: SeamStageConfig = field(default_factory=SeamStageConfig)
    gen_data: GenDataConfig = field(default_factory=GenDataConfig)
    joint: JointConfig = field(default_factory=JointConfig)

    def __post_init__(self):
        if self.task not in ("choice", "generation"):
            raise ValueError(f"task: must be choice or generation, got {self.task!r}")
        labels = self.labeller.name  # the annotate.method (or joint) is known: registered
        for m in self.strong.methods:
            reason = methods.unfit(m, labels, self.task)
            if reason:
                raise ValueError(f"strong.methods: {reason}")
        if self.labeller.check:
            self.labeller.check(self)
        if self.task == "generation":
            for name in ("reward", "align"):
                if getattr(self, name).enabled:
                    raise ValueError(f"{name}.enabled: the alignment stages need a preference task (task: choice)")
            if self.weak.finetune or self.strong.bootstrap:
                raise ValueError("weak.finetune / strong.bootstrap: not available on a generation task")
            self.joint.resolved_weights(len(self.weak.models))
        if self.align.enabled and not self.reward.enabled:
            raise ValueError("align.enabled: the alignment stage needs reward.enabled: true")
        if self.reward.enabled and self.reward.kind == "judge" and self.reward.judge_method not in self.strong.methods:
            raise ValueError(f"reward.judge_method: {self.reward.judge_method} is not in strong.methods")
        if not self.run_dir:
            raise ValueError("run_dir: must be a non-empty path")
        if self.strong.train.head == "classifier" and self.template.answer == "text":
            raise ValueError("strong.train.head: classifier needs template.answer: label")

    @property
    def root(self) -> Path:
        # absolute: Ray Train workers and Ray Data tasks run in other working directories
        return Path(self.run_dir).expanduser().resolve()

    @property
    def labeller(self) -> methods.Labeller:
        """Who makes the weak labels: annotate.method on a choice task, joint decoding on generation."""
        name = "joint" if self.task == "generation" else self.annotate.method
        try:
            found = methods.labeller(name)
        except ValueError as e:
            raise ValueError(f"annotate.method: {e}") from None
        if found.task != self.task:
            raise ValueError(f"annotate.method: {name} labels {found.task} tasks, this run is task: {self.task}")
        return found


def stage_data(cfg: RunConfig, log=print) -> dict:
    return prepare_data(cfg.data, cfg.root / "data", log)


def stage_weak_sft(cfg: RunConfig, log=print) -> dict:
    from pipelines.train_stages import weak_sft_stage

    if not cfg.weak.finetune:
        log("weak_sft: off (weak.finetune: false), weak models label zero-shot")
        return {}
    return {"models": weak_sft_stage(cfg.root, cfg.weak, cfg.template, log)}


def stage_annotate(cfg: RunConfig, log=print) -> dict:
    """The weak_labels stage of the run's labeller (pipelines/methods)."""
    return cfg.labeller.stage(cfg, log)


def stage_ceiling(cfg: RunConfig, log=print) -> dict:
    from pipelines.train_stages import ceiling_stage

    return ceiling_stage(cfg.root, cfg.strong, cfg.template, log)


def stage_w2s(cfg: RunConfig, log=print) -> dict:
    from pipelines.train_stages import bootstrap_stage, w2s_stage

    weights = cfg.weak.labelling(cfg.root).weights
    rows = weak_label_rows(cfg)
    out = {}
    for name in cfg.strong.methods:
        m = methods.method(name)
        out[name] = w2s_stage(cfg.root, cfg.strong, m, m.examples(rows, cfg), weights, cfg.template, log)
    if cfg.strong.bootstrap:
        naive = methods.method("naive")  # Burns et al.: each step trains on the previous model's hard labels
        out["bootstrap"] = bootstrap_stage(
            cfg.root, cfg.strong, rows, naive, lambda r: naive.examples(r, cfg),
            lambda model_dir, labels_dir: _label_with(cfg, model_dir, labels_dir, log), weights, cfg.template, log)
    return out


def weak_label_rows(cfg: RunConfig) -> list[dict]:
    """The weak_labels stage's rows, read back by the run's labeller (the config says which)."""
    return cfg.labeller.read(cfg.root / "weak_labels").to_pylist()


def _strong_weak_config(cfg: RunConfig, name: str, spec: str) -> WeakConfig:
    """A one-model ensemble config that scores with a (trained or pretrained) strong model."""
    backend = BackendConfig(head=cfg.strong.train.head, max_length=cfg.strong.train.max_length)
    return WeakConfig(models=[ModelConfig(spec=spec, name=name, backend=backend)])


def _label_with(cfg: RunConfig, model_dir: str, labels_dir: Path, log) -> dict:
    from actors.strong import StrongActor

    acfg = replace(cfg.annotate, method="naive")
    return annotate_stage(cfg.root / "data" / "held_out", labels_dir, _strong_weak_config(cfg, "intermediate", model_dir),
                          acfg, cfg.template, cfg.cluster, log, actor_cls=StrongActor, role="strong")


def eval_targets(cfg: RunConfig) -> dict[str, str]:
    """Strong models to score on the test split: name -> model spec or directory."""
    targets = {"strong zero-shot": cfg.strong.spec, "strong ceiling": str(cfg.root / "strong_ceiling" / "model")}
    methods = list(cfg.strong.methods) + (["bootstrap"] if cfg.strong.bootstrap else [])
    targets.update({f"w2s {m}": str(cfg.root / "strong_w2s" / m / "model") for m in methods})
    return targets


def stage_eval(cfg: RunConfig, log=print) -> dict:
    from actors.strong import StrongActor
    from pipelines.evaluate import compare

    test, ev = cfg.root / "data" / "test", cfg.root / "eval"
    weak = cfg.weak.labelling(cfg.root)
    ens = replace(cfg.annotate, method="ensemble" if len(weak.models) > 1 else "naive")
    annotate_stage(test, ev / "weak", weak, ens, cfg.template, cfg.cluster, log)
    naive = replace(cfg.annotate, method="naive")
    dirs = {"weak": ev / "weak"}
    for name, spec in eval_targets(cfg).items():
        d = ev / name.replace(" ", "_")
        annotate_stage(test, d, _strong_weak_config(cfg, "strong", spec), naive, cfg.template, cfg.cluster, log,
                       actor_cls=StrongActor, role="strong")
        dirs[name] = d
    per_model = [m.name for m in weak.models]
    supervisor = "weak ensemble" if len(per_model) > 1 else f"weak {per_model[0]}"
    w2s = [n for n in dirs if n.startswith("w2s ")]
    result = compare(dirs, per_model, supervisor, "strong ceiling", w2s)
    result["ceiling"] = "strong ceiling"
    return result


def stages(cfg: RunConfig) -> list:
    from pipelines import align, gen_run

    if cfg.task == "generation":
        return [("data", gen_run.stage_data), ("weak_labels", stage_annotate), ("strong_ceiling", gen_run.stage_ceiling),
                ("strong_w2s", stage_w2s), ("eval", gen_run.stage_eval)]
    out = [("data", stage_data), ("weak_sft", stage_weak_sft), ("weak_labels", stage_annotate),
           ("strong_ceiling", stage_ceiling), ("strong_w2s", stage_w2s)]
    if cfg.reward.enabled:
        out.append(("reward_model", align.stage_reward))
    out.append(("eval", stage_eval))
    if cfg.align.enabled:
        out += [("dpo_pairs", align.stage_pairs), ("dpo", align.stage_dpo), ("align_eval", align.stage_align_eval)]
    return out


def _brief(result: dict) -> dict:
    drop = ("config", "fingerprint")
    return {k: (_brief(v) if isinstance(v, dict) else v) for k, v in result.items() if k not in drop}


def gpus_needed(cfg: RunConfig) -> int:
    """The most GPUs any stage's placement plan asks for: the weak ensemble, the strong model, or
    (alignment) the policy beside the reward model or the weak ensemble."""
    from cluster.plan import plan_resources

    n_weak = len(cfg.weak.models)
    plans = [{"weak": n_weak}, {"strong": 1}]  # generation: the joint stage's ensemble, one strong model
    if cfg.annotate.method == "seam":
        plans.append({"strong": 1, "weak": 1})
    if cfg.align.enabled:
        scorer = cfg.align.pairs.scorer
        plans.append({"policy": 1, "reward": int(scorer == "reward"), "weak": n_weak if scorer == "weak" else 0})
    return max(plan_resources(p, cfg.cluster, 1.0).total_gpus for p in plans)


def run(cfg: RunConfig, log=print, until: str | None = None) -> dict:
    """Run the stages in order (up to and including `until`), skipping complete ones.

    The data stage runs before Ray starts, so a data error is reported at once. A run stopped by
    `until` merges its stages into an existing metrics.json and leaves the sections and the
    report of later stages as they are (it did not produce them)."""
    from cluster.connect import connect

    t0 = time.time()
    metrics: dict = {"stages": {}, "data": {}, "strong_spec": cfg.strong.spec}
    for name, fn in stages(cfg):
        if name != "data":
            # every logical GPU the run will need, declared once: a local cluster cannot grow later
            connect(cfg.cluster, gpus_needed(cfg))
        t = time.time()
        log(f"== stage {name}")
        result = fn(cfg, log)
        if name in ("eval", "align_eval"):
            metrics["evaluation" if name == "eval" else "alignment"] = result
        else:
            metrics["stages"][name] = _brief(result)
        metrics["stages"].setdefault(name, {})["seconds"] = round(time.time() - t, 2)
        if name == until:
            break
    data = json.loads((cfg.root / "data" / "_SUCCESS.json").read_text())
    source = cfg.gen_data.source if cfg.task == "generation" else cfg.data.source
    metrics["data"] = {"source": source, "counts": data["counts"]}
    metrics["seconds"] = round(time.time() - t0, 2)
    path = cfg.root / "metrics.json"
    if until is not None and path.is_file():
        old = json.loads(path.read_text())
        old["stages"].update(metrics["stages"])
        metrics = {**old, "stages": old["stages"], "data": metrics["data"]}
        path.write_text(json.dumps(metrics, indent=1, default=str))
        log(f"run: stopped after {until}; its stages merged into {path} (other results kept)")
        return metrics
    path.write_text(json.dumps(metrics, indent=1, default=str))
    if "evaluation" in metrics:
        from pipelines.evaluate import write_report

        report = write_report(cfg.root, metrics, report_sections(cfg))
        log(results_table(metrics))
        log(f"run: report in {report}")
    log(f"run: done in {metrics['seconds']:.1f} s; metrics in {path}")
    return metrics


def report_sections(cfg: RunConfig) -> list:
    """The report sections of the run's labeller and methods, each once, in that order."""
    out = [cfg.labeller.report] + [methods.method(m).report for m in cfg.strong.methods]
    return [s for i, s in enumerate(out) if s is not None and s not in out[:i]]


def results_table(metrics: dict) -> str:
    ev = metrics["evaluation"]
    lines = [f"| model | test {ev.get('metric', 'accuracy')} | PGR |", "|---|---|---|"]
    for n, a in ev["accuracy"].items():
        p = ev["pgr"].get(n)
        lines.append(f"| {n} | {a:.3f} | {'' if n not in ev['pgr'] else ('n/a' if p is None else f'{p:.3f}')} |")
    return "\n".join(lines)
