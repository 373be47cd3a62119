"""The end-to-end run: one config chains the stages, each skipped when its output is complete.

    w2s run configs/quickstart.yaml [key=value ...]

data -> weak_sft (weak.finetune) -> weak_labels (annotate.method; seam: SEAM search + baselines)
-> strong_lm (strong.lm_finetune) -> strong_ceiling -> strong_w2s/<method> for
every strong.methods (+ bootstrap when strong.bootstrap lists intermediate models) -> eval (test
accuracy of every model, PGR, weak blind-spot share) -> report (report.md, metrics.json, PNG plots).
task: generation runs pipelines/gen_run.py's stages instead (joint decoding, SFT, soft tokens).
On a preference task (K = 2) with reward.enabled / align.enabled, the alignment stages follow
strong_w2s (pipelines/align.py): reward_model + reward_ceiling -> dpo_pairs -> dpo -> align_eval.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from actors.backend import BackendConfig
from actors.model_config import DerivedModelConfig, ModelConfig
from cluster.config import ClusterConfig
from pipelines.align import AlignConfig
from pipelines.annotate import AnnotateConfig, annotate_stage
from pipelines.data import DataConfig, fingerprint, prepare_data
from pipelines.generation import GenDataConfig
from pipelines.joint_annotate import JointConfig
from actors.prompts import TemplateConfig
from pipelines.seam import SeamConfig
from pipelines.seam_annotate import SeamStageConfig
from pipelines.macpo import MacpoConfig
from pipelines.search import SearchConfig
from pipelines import methods
from pipelines.roles import RewardConfig, StrongConfig, WeakConfig


@dataclass
class RunConfig:
    """What every recipe shares: the roles (weak, strong), the cluster, the prompt template.

    A config file is one recipe, a root config that adds its own sections (RECIPES):
      w2s         classification W2S (data, annotate): weak labels -> strong_w2s/<method> -> eval
      seam        w2s with SEAM's search as the labeller (+ seam, seam_stage)
      align       w2s + the W2S reward model, DPO of a policy, win / tie / lose (+ reward, policy, align)
      search      weak-to-strong search: CBS / Best-of-N / sampling of a frozen strong model (+ search)
      macpo       MACPO: weak teachers and the strong student improve each other by contrastive DPO (+ macpo)
      generation  joint decoding, SFT / soft tokens, token F1 (gen_data, joint)
    `recipe:` names it; without one it is read from the sections given (task: generation or a
    gen_data / joint section -> generation; a search section -> search; a macpo section -> macpo; annotate.method: seam or a seam section
    -> seam; a reward / policy / align section -> align; else w2s). A section of another recipe is an unknown field."""
    weak: WeakConfig
    run_dir: str = "runs/default"
    recipe: str = ""
    # choice: option-choice / preference rows; generation: prompt + reference rows (the recipe's)
    task: str = ""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    strong: StrongConfig = field(default_factory=StrongConfig)
    # run the whole pipeline once per seed (run_dir/seed_<s>, every training seed = s) and
    # aggregate mean and intervals over seeds (pipelines/seeds.py); [] = one run
    seeds: list[int] = field(default_factory=list)
    seed_data: bool = False  # also draw each seed's own data split (data.seed = s)

    NAME = ""
    TASK = "choice"

    @classmethod
    def select(cls, data: dict) -> type:
        """The recipe class a YAML mapping describes (the loader calls this on RunConfig)."""
        if cls is not RunConfig:
            return cls
        name = data.get("recipe") or _infer_recipe(data)
        if name not in RECIPES:
            raise ValueError(f"recipe: must be one of {sorted(RECIPES)}, got {name!r}")
        return RECIPES[name]

    def __post_init__(self):
        if self.recipe not in ("", self.NAME):
            raise ValueError(f"recipe: this config is the {self.NAME} recipe, got {self.recipe!r}")
        self.recipe = self.NAME
        if self.task not in ("", self.TASK):
            raise ValueError(f"task: the {self.NAME} recipe runs task: {self.TASK}, got {self.task!r}")
        self.task = self.TASK
        if not self.run_dir:
            raise ValueError("run_dir: must be a non-empty path")
        labels = self.labeller.name
        for m in self.strong.methods:
            reason = methods.unfit(m, labels, self.task)
            if reason:
                raise ValueError(f"strong.methods: {reason}")
        if self.labeller.check:
            self.labeller.check(self)
        if len(set(self.seeds)) != len(self.seeds) or not all(isinstance(x, int) for x in self.seeds):
            raise ValueError(f"seeds: must be distinct integers, got {self.seeds!r}")
        if self.seeds and self.TASK == "generation":
            raise ValueError("seeds: not available on the generation recipe (its evaluation is token F1)")
        if self.strong.train.head == "classifier" and self.template.answer == "text":
            raise ValueError("strong.train.head: classifier needs template.answer: label")

    @property
    def root(self) -> Path:
        # absolute: Ray Train workers and Ray Data tasks run in other working directories
        return Path(self.run_dir).expanduser().resolve()

    @property
    def labeller(self) -> methods.Labeller:
        """Who makes the weak labels (pipelines/methods): annotate.method, or joint decoding."""
        name = self.labeller_name
        try:
            found = methods.labeller(name)
        except ValueError as e:
            raise ValueError(f"annotate.method: {e}") from None
        if found.task != self.task:
            raise ValueError(f"annotate.method: {name} labels {found.task} tasks, the {self.NAME} recipe is task: {self.task}")
        return found

    def stages(self) -> list:
        raise NotImplementedError

    def plans(self) -> list[dict]:
        """The role counts of every stage's placement plan (gpus_needed takes the largest)."""
        return [{"weak": len(self.weak.models)}, {"strong": 1}]


def _eval_plan(cfg) -> dict:
    """The largest evaluation pass: that many trained strong models side by side (stage_eval)."""
    n = len(eval_targets(cfg)) - 1  # the zero-shot is scored in a stage of its own
    return {"strong": min(n, cfg.cluster.eval_models) if cfg.cluster.eval_models else n}


@dataclass
class W2SRecipe(RunConfig):
    """Classification W2S: option-choice rows (data.*), weak labels by annotate.method."""
    data: DataConfig = field(default_factory=DataConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)

    NAME = "w2s"

    def __post_init__(self):
        super().__post_init__()
        if self.NAME != "seam" and self.annotate.method == "seam":
            raise ValueError("annotate.method: seam is the seam recipe (recipe: seam, with its seam / seam_stage sections)")

    @property
    def labeller_name(self) -> str:
        return self.annotate.method

    @property
    def source(self) -> str:
        return self.data.source

    def stages(self) -> list:
        lm = [("strong_lm", stage_strong_lm)] if self.strong.lm_finetune.enabled else []
        return [("data", stage_data), ("weak_sft", stage_weak_sft), ("weak_labels", stage_annotate), *lm,
                ("strong_ceiling", stage_ceiling), ("strong_w2s", stage_w2s), ("eval", stage_eval)]

    def plans(self) -> list[dict]:
        return super().plans() + [_eval_plan(self)]


@dataclass
class SeamRecipe(W2SRecipe):
    """W2S with SEAM as the labeller: strong.spec searches FF-trees, weak.models[0] decides."""
    annotate: AnnotateConfig = field(default_factory=lambda: AnnotateConfig(method="seam"))
    seam: SeamConfig = field(default_factory=SeamConfig)
    seam_stage: SeamStageConfig = field(default_factory=SeamStageConfig)

    NAME = "seam"

    def __post_init__(self):
        if self.annotate.method != "seam":
            raise ValueError(f"annotate.method: the seam recipe labels with seam, got {self.annotate.method!r}")
        super().__post_init__()

    def plans(self) -> list[dict]:
        return super().plans() + [{"strong": 1, "weak": 1}]


@dataclass
class AlignRecipe(W2SRecipe):
    """W2S on preference pairs (K = 2), then the W2S reward model (reward), DPO of the policy
    (policy: spec "" = strong.spec) on pairs it ranks, and the impartial judge (align)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    policy: DerivedModelConfig = field(default_factory=DerivedModelConfig)
    align: AlignConfig = field(default_factory=AlignConfig)

    NAME = "align"

    @property
    def policy_spec(self) -> str:
        """The SFT policy that DPO aligns: policy.spec, or the strong model."""
        return self.policy.spec or self.strong.spec

    def __post_init__(self):
        super().__post_init__()
        if self.align.enabled and not self.reward.enabled:
            raise ValueError("align.enabled: the alignment stage needs reward.enabled: true")
        if self.reward.enabled and self.reward.kind == "judge" and self.reward.judge_method not in self.strong.methods:
            raise ValueError(f"reward.judge_method: {self.reward.judge_method} is not in strong.methods")

    def stages(self) -> list:
        from pipelines import align

        out = super().stages()
        if self.reward.enabled:
            out.insert(-1, ("reward_model", align.stage_reward))
        if self.align.enabled:
            out += [("dpo_pairs", align.stage_pairs), ("dpo", align.stage_dpo), ("align_eval", align.stage_align_eval)]
        return out

    def plans(self) -> list[dict]:
        out = super().plans()
        if self.align.enabled:
            scorer, n_weak = self.align.pairs.scorer, len(self.weak.models)
            out += [{"policy": 1, "reward": int(scorer == "reward"), "weak": n_weak if scorer == "weak" else 0},
                    {"reward": 2}]  # align_eval: the judge beside the W2S reward model
        return out


@dataclass
class _NoW2STrainingRecipe(W2SRecipe):
    """A recipe that trains no strong model on weak labels (search, macpo): strong.methods [],
    no bootstrap or generative finetuning, one seed."""
    strong: StrongConfig = field(default_factory=lambda: StrongConfig(methods=[]))

    WHY = ""  # why it trains none, for the error

    def __post_init__(self):
        if self.strong.methods or self.strong.bootstrap or self.strong.lm_finetune.enabled:
            raise ValueError(f"strong.methods: the {self.NAME} recipe {self.WHY}; set strong.methods: [] "
                             "(and leave strong.bootstrap / strong.lm_finetune off)")
        super().__post_init__()
        if self.seeds:
            raise ValueError(f"seeds: not available on the {self.NAME} recipe")


@dataclass
class SearchRecipe(_NoW2STrainingRecipe):
    """Weak-to-strong search (pipelines/search.py): the frozen strong.spec decodes test prompts
    steered by a small tuned / untuned pair (search.tuned: DPO of weak.models[0] on its own weak
    labels unless given), judged by strong_ceiling. No strong model is trained on weak labels."""
    search: SearchConfig = field(default_factory=SearchConfig)

    NAME = "search"
    WHY = "trains no strong model on weak labels"

    def stages(self) -> list:
        from pipelines import search

        return [("data", stage_data), ("weak_sft", stage_weak_sft), ("weak_labels", stage_annotate),
                ("strong_ceiling", stage_ceiling), ("search_tuned", search.stage_tuned),
                ("search", search.stage_search)]

    def plans(self) -> list[dict]:
        return [{"weak": len(self.weak.models)}, {"strong": 1}, {"policy": 1, "weak": 2, "reward": 1}]


@dataclass
class MacpoRecipe(_NoW2STrainingRecipe):
    """MACPO (pipelines/macpo.py): weak teachers (weak.models, >= 2) and the strong student, each a
    positive and a negative agent, improve each other by contrastive DPO; judged by strong_ceiling."""
    macpo: MacpoConfig = field(default_factory=MacpoConfig)

    NAME = "macpo"
    WHY = "trains its own agents"

    def __post_init__(self):
        super().__post_init__()
        if len(self.weak.models) < 2:
            raise ValueError("weak.models: MACPO needs at least 2 weak teachers")
        if self.weak.finetune:
            raise ValueError("weak.finetune: the macpo recipe initialises its teachers itself (macpo.sft)")

    def stages(self) -> list:
        from pipelines import macpo

        return [("data", stage_data), ("strong_ceiling", stage_ceiling), ("macpo_init", macpo.stage_init),
                ("macpo_iter", macpo.stage_iterations), ("macpo_eval", macpo.stage_eval)]

    def plans(self) -> list[dict]:
        n = len(self.weak.models)
        return [{"strong": 1}, {"policy": n, "weak": n}, {"policy": n + 1, "weak": n + 1},
                {"policy": self.macpo.iterations + 2, "reward": 1}]


@dataclass
class GenerationRecipe(RunConfig):
    """Generation W2S: prompt + reference rows (gen_data), joint decoding as the weak labels
    (joint), the strong model learns the target texts, token F1 (pipelines/gen_run.py)."""
    gen_data: GenDataConfig = field(default_factory=GenDataConfig)
    joint: JointConfig = field(default_factory=JointConfig)

    NAME = "generation"
    TASK = "generation"
    labeller_name = "joint"

    def __post_init__(self):
        super().__post_init__()
        if self.weak.finetune or self.strong.bootstrap or self.strong.lm_finetune.enabled:
            raise ValueError("weak.finetune / strong.bootstrap / strong.lm_finetune: not available on the "
                             "generation recipe")
        self.joint.resolved_weights(len(self.weak.models))

    @property
    def source(self) -> str:
        return self.gen_data.source

    def stages(self) -> list:
        from pipelines import gen_run

        return [("data", gen_run.stage_data), ("weak_labels", stage_annotate), ("strong_ceiling", gen_run.stage_ceiling),
                ("strong_w2s", stage_w2s), ("eval", gen_run.stage_eval)]


RECIPES: dict[str, type[RunConfig]] = {r.NAME: r for r in (W2SRecipe, SeamRecipe, AlignRecipe, SearchRecipe,
                                                           MacpoRecipe, GenerationRecipe)}


def _infer_recipe(data: dict) -> str:
    if data.get("task") == "generation" or {"gen_data", "joint"} & set(data):
        return "generation"
    if "search" in data:
        return "search"
    if "macpo" in data:
        return "macpo"
    if (data.get("annotate") or {}).get("method") == "seam" or {"seam", "seam_stage"} & set(data):
        return "seam"
    if {"reward", "policy", "align"} & set(data):
        return "align"
    return "w2s"


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


def stage_strong_lm(cfg: RunConfig, log=print) -> dict:
    from pipelines.train_stages import lm_stage

    return lm_stage(cfg.root, cfg.strong, cfg.template, log)


def lm_model(cfg: RunConfig) -> str:
    """The strong model after generative finetuning (strong_lm/)."""
    return str(cfg.root / "strong_lm" / "model")


def stage_ceiling(cfg: RunConfig, log=print) -> dict:
    from pipelines.train_stages import ceiling_stage

    out = ceiling_stage(cfg.root, cfg.strong, cfg.template, log)
    lm = cfg.strong.lm_finetune
    if lm.enabled and lm.ceiling:
        return {"ceiling": out, "ceiling +lm": ceiling_stage(cfg.root, cfg.strong, cfg.template, log,
                                                             spec=lm_model(cfg), out="strong_ceiling_lm")}
    return out


def stage_w2s(cfg: RunConfig, log=print) -> dict:
    from pipelines.train_stages import bootstrap_stage, w2s_stage

    weights = cfg.weak.labelling(cfg.root).weights
    rows = weak_label_rows(cfg)
    out = {}
    for name in cfg.strong.methods:
        m = methods.method(name)
        out[name] = w2s_stage(cfg.root, cfg.strong, m, m.examples(rows, cfg), weights, cfg.template, log)
    if cfg.strong.lm_finetune.enabled:  # the same methods from the LM-finetuned model
        for name in cfg.strong.lm_finetune.methods:
            m = methods.method(name)
            out[f"{name} +lm"] = w2s_stage(cfg.root, cfg.strong, m, m.examples(rows, cfg), weights, cfg.template, log,
                                           spec=lm_model(cfg), out=cfg.root / "strong_w2s" / f"{name}_lm")
    for key, (name, folder) in bootstrap_runs(cfg).items():
        # Burns et al.: each step trains on the previous model's hard labels (naive); another
        # method (a conflict of seed 002) is applied at every step of the chain
        m = methods.method(name)
        out[key] = bootstrap_stage(
            cfg.root, cfg.strong, rows, m, lambda r, m=m: m.examples(r, cfg),
            lambda model_dir, labels_dir: _label_with(cfg, model_dir, labels_dir, log), weights, cfg.template, log,
            name=folder)
    return out


def bootstrap_runs(cfg: RunConfig) -> dict[str, tuple[str, str]]:
    """Each bootstrapped model's name ("bootstrap" for naive, "bootstrap <method>") -> (method,
    its folder: bootstrap, bootstrap_<method>)."""
    if not cfg.strong.bootstrap:
        return {}
    names = {m: "bootstrap" if m == "naive" else f"bootstrap {m}" for m in cfg.strong.bootstrap_methods}
    return {name: (m, name.replace(" ", "_", 1)) for m, name in names.items()}


def weak_label_rows(cfg: RunConfig) -> list[dict]:
    """The weak_labels stage's rows, read back by the run's labeller (the config says which)."""
    return cfg.labeller.read(cfg.root / "weak_labels").to_pylist()


def _strong_weak_config(cfg: RunConfig, name: str, spec: str) -> WeakConfig:
    """A one-model ensemble config that scores with a (trained or pretrained) strong model."""
    return _strong_models(cfg, {name: spec})


def _strong_models(cfg: RunConfig, specs: dict[str, str]) -> WeakConfig:
    """An ensemble config of strong models (name -> spec or model directory) that score options."""
    backend = BackendConfig(head=cfg.strong.train.head, max_length=cfg.strong.train.max_length)
    return WeakConfig(models=[ModelConfig(spec=spec, name=name, backend=backend) for name, spec in specs.items()])


def _label_with(cfg: RunConfig, model_dir: str, labels_dir: Path, log) -> dict:
    from actors.strong import StrongActor

    acfg = replace(cfg.annotate, method="naive")
    return annotate_stage(cfg.root / "data" / "held_out", labels_dir, _strong_weak_config(cfg, "intermediate", model_dir),
                          acfg, cfg.template, cfg.cluster, log, actor_cls=StrongActor, role="strong")


def eval_targets(cfg: RunConfig) -> dict[str, str]:
    """Strong models to score on the test split: name -> model spec or directory."""
    targets = {"strong zero-shot": cfg.strong.spec, "strong ceiling": str(cfg.root / "strong_ceiling" / "model")}
    targets.update({f"w2s {m}": str(cfg.root / "strong_w2s" / m / "model") for m in cfg.strong.methods})
    targets.update({f"w2s {key}": str(cfg.root / "strong_w2s" / folder / "model")
                    for key, (_, folder) in bootstrap_runs(cfg).items()})
    lm = cfg.strong.lm_finetune
    if lm.enabled:
        if lm.ceiling:
            targets["strong ceiling +lm"] = str(cfg.root / "strong_ceiling_lm" / "model")
        targets.update({f"w2s {m} +lm": str(cfg.root / "strong_w2s" / f"{m}_lm" / "model") for m in lm.methods})
    return targets


def model_slug(name: str) -> str:
    """An evaluated model's actor and column name: model names hold letters, digits, '_', '.', '-'
    only, so "w2s naive +lm" scores as w2s_naive_lm."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def stage_eval(cfg: RunConfig, log=print) -> dict:
    """Score the weak ensemble, the strong zero-shot and every trained strong model on the test
    split. The zero-shot is a stage of its own (it does not depend on the seed: pipelines/seeds.py
    shares it); the trained models are scored together, each loaded once in its own actor and every
    batch scored by all of them (cluster.eval_models per pass), so a run pays one start-up."""
    from actors.strong import StrongActor
    from pipelines.evaluate import compare

    test, ev = cfg.root / "data" / "test", cfg.root / "eval"
    weak = cfg.weak.labelling(cfg.root)
    ens = replace(cfg.annotate, method="ensemble" if len(weak.models) > 1 else "naive")
    annotate_stage(test, ev / "weak", weak, ens, cfg.template, cfg.cluster, log)
    targets = eval_targets(cfg)
    zs = "strong zero-shot"
    annotate_stage(test, ev / "strong_zero-shot", _strong_weak_config(cfg, "strong", targets.pop(zs)),
                   replace(cfg.annotate, method="naive"), cfg.template, cfg.cluster, log, actor_cls=StrongActor, role="strong")
    dirs: dict = {"weak": ev / "weak", zs: ev / "strong_zero-shot"}
    names = list(targets)
    slug = {n: model_slug(n) for n in names}
    size = cfg.cluster.eval_models or len(names)
    for i in range(0, len(names), size):
        part = {slug[n]: targets[n] for n in names[i:i + size]}
        # named by its members: another set of methods scores in a folder of its own, never a conflict
        d = ev / f"strong_{fingerprint(sorted(part.items()))[:8]}"
        annotate_stage(test, d, _strong_models(cfg, part), replace(cfg.annotate, method="ensemble"), cfg.template,
                       cfg.cluster, log, actor_cls=StrongActor, role="strong")
        dirs.update({n: (d, f"probs_{slug[n]}") for n in names[i:i + size]})
    per_model = [m.name for m in weak.models]
    supervisor = "weak ensemble" if len(per_model) > 1 else f"weak {per_model[0]}"
    w2s = [n for n in dirs if n.startswith("w2s ")]
    result = compare(dirs, per_model, supervisor, "strong ceiling", w2s, zero_shot=zs)
    result["ceiling"] = "strong ceiling"
    return result


def _brief(result: dict) -> dict:
    drop = ("config", "fingerprint")
    return {k: (_brief(v) if isinstance(v, dict) else v) for k, v in result.items() if k not in drop}


def gpus_needed(cfg: RunConfig) -> int:
    """The most GPUs any stage's placement plan asks for (the recipe's `plans`)."""
    from cluster.plan import plan_resources

    return max(plan_resources(p, cfg.cluster, 1.0).total_gpus for p in cfg.plans())


# the stages whose result is a section of metrics.json of its own (not under "stages")
RESULTS = {"eval": "evaluation", "align_eval": "alignment", "search": "search", "macpo_eval": "macpo"}


def run(cfg: RunConfig, log=print, until: str | None = None) -> dict:
    """Run the stages in order (up to and including `until`), skipping complete ones.

    The data stage runs before Ray starts, so a data error is reported at once. A run stopped by
    `until` merges its stages into an existing metrics.json and leaves the sections and the
    report of later stages as they are (it did not produce them)."""
    from cluster.connect import connect

    if cfg.seeds:
        from pipelines.seeds import run_seeds

        return run_seeds(cfg, run, log, until)
    t0 = time.time()
    metrics: dict = {"stages": {}, "data": {}, "strong_spec": cfg.strong.spec}
    for name, fn in cfg.stages():
        if name != "data":
            # every logical GPU the run will need, declared once: a local cluster cannot grow later
            connect(cfg.cluster, gpus_needed(cfg))
        t = time.time()
        log(f"== stage {name}")
        result = fn(cfg, log)
        if name in RESULTS:
            metrics[RESULTS[name]] = result
        else:
            metrics["stages"][name] = _brief(result)
        metrics["stages"].setdefault(name, {})["seconds"] = round(time.time() - t, 2)
        if name == until:
            break
    data = json.loads((cfg.root / "data" / "_SUCCESS.json").read_text())
    metrics["data"] = {"source": cfg.source, "counts": data["counts"]}
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
    elif "search" in metrics or "macpo" in metrics:
        from pipelines import macpo, search

        writer = search.write_report if "search" in metrics else macpo.write_report
        log(f"run: report in {writer(cfg.root, metrics)}")
    log(f"run: done in {metrics['seconds']:.1f} s; metrics in {path}")
    return metrics


def report_sections(cfg: RunConfig) -> list:
    """The report sections of the run's labeller and methods, each once, in that order."""
    out = [cfg.labeller.report] + [methods.method(m).report for m in cfg.strong.methods]
    return [s for i, s in enumerate(out) if s is not None and s not in out[:i]]


def results_table(metrics: dict) -> str:
    """The report's results table (with intervals and the zero-shot flags) for the console."""
    from pipelines.evaluate import result_lines

    return "\n".join(result_lines(metrics["evaluation"]))
