"""Config loading: YAML values, key=value overrides, errors that name the field."""

import pytest

from cluster.loader import apply_overrides, load_config
from pipelines.run import RunConfig


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


BASE = "weak:\n  models:\n    - {spec: 'tiny:llama'}\n"


def test_overrides_win_and_nest(tmp_path):
    cfg = load_config(RunConfig, _write(tmp_path, BASE + "annotate: {method: naive}\n"),
                      ["annotate.method=reliability", "weak.models.0.weight=2", "weak.models.1.spec=tiny:llama:2",
                       "cluster.weak_gpu=0.5", "data.held_out=7"])
    assert cfg.annotate.method == "reliability"
    assert [m.spec for m in cfg.weak.models] == ["tiny:llama", "tiny:llama:2"]
    assert cfg.weak.models[0].weight == 2.0 and cfg.weak.weights == pytest.approx([2 / 3, 1 / 3])
    assert cfg.cluster.weak_gpu == 0.5 and cfg.data.held_out == 7
    assert [m.name for m in cfg.weak.models] == ["llama", "llama-2"]


@pytest.mark.parametrize("text,overrides,message", [
    (BASE, ["annotate.methd=naive"], "annotate.methd: unknown field"),
    (BASE, ["annotate.method=vote"], "annotate.method: unknown labelling method .vote."),
    (BASE, ["data.held_out=many"], "data.held_out: expected int"),
    (BASE, ["cluster.weak_gpu=0.3"], "cluster.weak_gpu"),
    (BASE, ["weak.models.0.spec=nope:model"], "weak.models.0.spec: unknown model spec scheme"),
    (BASE, ["weak.models.0.spec=embedded:gpt5"], "unknown embedded model"),
    (BASE, ["weak.models.0.weight=-1"], "weight: must be > 0"),
    (BASE, ["weak.models.1.spec=tiny:llama"], "duplicate name"),
    ("run_dir: x\n", [], "weak"),
    ("weak: {models: []}\n", [], "weak.models: at least one"),
    (BASE, ["weak.models.5.spec=x"], "index '5' out of range"),
    (BASE, ["annotate"], "must look like key=value"),
    ("- just\n- a list\n", [], "mapping at top level"),
    ("weak: [unclosed\n", [], "not valid YAML"),
])
def test_bad_config_names_the_field(tmp_path, text, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        load_config(RunConfig, _write(tmp_path, text), overrides)


ONE = BASE + "strong: {methods: [naive]}\n"


@pytest.mark.parametrize("text,recipe,stages", [
    (ONE, "w2s", ["data", "weak_sft", "weak_labels", "strong_ceiling", "strong_w2s", "eval"]),
    (ONE + "annotate: {method: seam}\n", "seam", ["data", "weak_sft", "weak_labels", "strong_ceiling", "strong_w2s",
                                                   "eval"]),
    (ONE + "reward: {enabled: true}\nalign: {enabled: true}\n", "align",
     ["data", "weak_sft", "weak_labels", "strong_ceiling", "strong_w2s", "reward_model", "eval", "dpo_pairs", "dpo",
      "align_eval"]),
    (ONE + "reward: {enabled: true}\n", "align",
     ["data", "weak_sft", "weak_labels", "strong_ceiling", "strong_w2s", "reward_model", "eval"]),
    (BASE + "task: generation\nstrong: {methods: [top_beam]}\n", "generation",
     ["data", "weak_labels", "strong_ceiling", "strong_w2s", "eval"]),
])
def test_the_sections_given_choose_the_recipe(tmp_path, text, recipe, stages):
    cfg = load_config(RunConfig, _write(tmp_path, text))
    assert cfg.recipe == recipe and type(cfg).NAME == recipe
    assert [name for name, _ in cfg.stages()] == stages


@pytest.mark.parametrize("text,message", [
    # a section of another recipe is not a field of this one (the union accepted and ignored it)
    (BASE + "task: generation\nstrong: {methods: [top_beam]}\nreward: {enabled: true}\n", "^reward: unknown field"),
    (ONE + "recipe: w2s\njoint: {max_new_tokens: 4}\n", "^joint: unknown field"),
    (ONE + "recipe: w2s\nannotate: {method: seam}\n", "^annotate.method: seam is the seam recipe"),
    (ONE + "recipe: seam\nannotate: {method: naive}\n", "^annotate.method: the seam recipe labels with seam"),
    (ONE + "recipe: dpo\n", "^recipe: must be one of"),
    (ONE + "recipe: align\ntask: generation\n", "^task: the align recipe runs task: choice"),
    (ONE + "align: {enabled: true}\n", "^align.enabled: the alignment stage needs reward.enabled"),
    (ONE + "policy: {spec: 'nope:model'}\n", "^policy.spec: unknown model spec scheme"),
    (ONE + "reward: {spec: 'nope:model'}\n", "^reward.spec: unknown model spec scheme"),
])
def test_recipe_mistakes_are_caught(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_config(RunConfig, _write(tmp_path, text))


def test_missing_file_is_clear():
    with pytest.raises(ValueError, match="file not found"):
        load_config(RunConfig, "/nonexistent/c.yaml")


def test_apply_overrides_parses_yaml_values():
    d = apply_overrides({}, ["a.b=[1, 2]", "a.c=true", "a.d=null", "e=0.25"])
    assert d == {"a": {"b": [1, 2], "c": True, "d": None}, "e": 0.25}


def test_shipped_configs_validate():
    from pathlib import Path

    from pipelines.seam import load_principles
    from serving.config import ServeConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    from ray.serve.schema import ServeDeploySchema

    from cluster.loader import load_yaml

    others = {"serve.yaml": lambda p: load_config(ServeConfig, p), "seam_principles.yaml": load_principles,
              "serve_deploy.yaml": lambda p: ServeDeploySchema.model_validate(load_yaml(p))}
    checked = 0
    for path in sorted(root.glob("*.yaml")):
        if path.name in others:
            others[path.name](path)
        else:
            load_config(RunConfig, path)
        checked += 1
    assert checked >= 5


def test_cli_rejects_bad_config_with_exit_2(capsys):
    from pathlib import Path

    from pipelines.cli import main

    tiny = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    assert main(["annotate", "--config", tiny, "annotate.method=bogus"]) == 2
    assert "bad config: annotate.method: unknown labelling method" in capsys.readouterr().err
    assert main(["run", tiny, "cluster.strategy=NOPE"]) == 2
    assert "cluster.strategy: unknown placement strategy" in capsys.readouterr().err
    assert main(["data"]) == 2
    assert "a config file is needed" in capsys.readouterr().err
