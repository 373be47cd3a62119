"""The alignment stages of the end-to-end run (after strong_w2s), on a preference task (K = 2):

  reward_model     the W2S reward model: Bradley-Terry head on the weak labels of held_out pairs
                   (reward.kind=judge: the generative judge strong_w2s/<reward.judge_method>)
  reward_ceiling   the same head on ground truth: the impartial judge (never sees weak labels)
  dpo_pairs        the SFT policy samples M responses per held_out prompt; the W2S reward model
                   (or the weak ensemble, seed 003 Eq. 10-11) picks chosen / rejected
  dpo              conservative DPO of the policy on those pairs (seed 003 Eq. 12, TRL on Ray Train)
  align_eval       SFT and DPO policies answer the test prompts (greedy); the impartial judge gives
                   P(DPO answer preferred): win / tie / lose; both reward models' pairwise accuracy
                   on the test pairs

    w2s run configs/tiny_align.yaml
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from actors.backend import BackendConfig
from pipelines.dpo_pairs import PairsConfig, clean, pairs_stage
from training.dpo_config import DPOConfig


@dataclass
class AlignConfig:
    enabled: bool = False
    policy: str = ""  # the SFT policy to align ("" = strong.spec)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    eval_max_new_tokens: int = 32
    tie_margin: float = 0.05  # |P(DPO preferred) - 0.5| <= tie_margin counts as a tie
    backend: BackendConfig = field(default_factory=BackendConfig)  # policy and judge inference

    def __post_init__(self):
        if not 0 <= self.tie_margin < 0.5:
            raise ValueError("tie_margin: must be in [0, 0.5)")
        if self.eval_max_new_tokens < 1:
            raise ValueError("eval_max_new_tokens: must be >= 1")


def reward_dirs(root: Path, cfg) -> dict[str, str]:
    w2s = (root / "reward_model" / "model" if cfg.reward.kind == "bt"
           else root / "strong_w2s" / cfg.reward.judge_method / "model")
    return {"w2s": str(w2s), "ceiling": str(root / "reward_ceiling" / "model")}


def stage_reward(cfg, log=print) -> dict:
    from pipelines.annotate import read_weak_labels
    from pipelines.data import read_split
    from actors.reward_model import save_reward_meta
    from pipelines.train_stages import reward_stage

    root = cfg.root
    out = {"ceiling": reward_stage(root, cfg.reward, cfg.strong.spec, read_split(root / "data" / "held_out"),
                                   "truth", root / "reward_ceiling", log)}
    if cfg.reward.kind == "bt":
        rows = read_weak_labels(root / "weak_labels").to_pylist()
        out["w2s"] = reward_stage(root, cfg.reward, cfg.strong.spec, rows, "weak", root / "reward_model", log)
    else:  # the option-choice judge trained on weak labels by strong_w2s
        from dataclasses import asdict

        judge = reward_dirs(root, cfg)["w2s"]
        save_reward_meta(judge, "judge", template=asdict(cfg.template), max_length=cfg.strong.train.max_length)
        out["w2s"] = {"model_dir": judge}
    return out


def stage_pairs(cfg, log=print) -> dict:
    a = cfg.align
    backend = replace(a.backend, head="lm")
    return pairs_stage(cfg.root / "data" / "held_out", cfg.root / "dpo_pairs", a.pairs, a.policy or cfg.strong.spec,
                       backend, reward_dirs(cfg.root, cfg)["w2s"], a.backend, cfg.weak.labelling(cfg.root),
                       cfg.cluster, log)


def stage_dpo(cfg, log=print) -> dict:
    from pipelines.runner import StageConflict
    from training.dpo_trainer import DPOJob, run_dpo_stage

    a = cfg.align
    job = DPOJob(name="dpo", policy=a.policy or cfg.strong.spec, out_dir=str(cfg.root / "dpo"), config=a.dpo,
                 data=str(cfg.root / "dpo_pairs" / "train.parquet"))
    return run_dpo_stage(job, log, conflict=StageConflict)


def win_tie_lose(p_new: list[float], margin: float) -> dict:
    """Counts of P(new preferred over old) above 0.5 + margin (win), below 0.5 - margin (lose),
    else tie; rates over all prompts."""
    p = np.asarray(p_new, dtype=np.float64)
    win, lose = int((p > 0.5 + margin).sum()), int((p < 0.5 - margin).sum())
    n = len(p)
    return {"win": win, "tie": n - win - lose, "lose": lose, "n": n,
            "win_rate": win / n if n else None, "lose_rate": lose / n if n else None}


def stage_align_eval(cfg, log=print) -> dict:
    """Test prompts: SFT vs DPO policy answers judged by the ground-truth reward model; reward
    models' pairwise accuracy on the labelled test pairs."""
    import ray

    from actors.reward import RewardActor
    from actors.strong import StrongActor
    from cluster.connect import connect
    from cluster.plan import plan_resources
    from cluster.worker_group import WorkerGroup
    from pipelines.runner import cluster_cpus
    from pipelines.data import read_split

    a, root = cfg.align, cfg.root
    rows = read_split(root / "data" / "test")
    prompts = [a.pairs.prompt_format.replace("{prompt}", r["prompt"]) for r in rows]
    plan = plan_resources({"policy": 1}, cfg.cluster, cluster_cpus(cfg.cluster))
    connect(cfg.cluster, plan.total_gpus)
    answers = {}
    for name, spec in (("sft", a.policy or cfg.strong.spec), ("dpo", str(root / "dpo" / "model"))):
        with WorkerGroup(StrongActor, plan.roles["policy"], cfg.cluster,
                         [{"name": name, "spec": spec, "backend": replace(a.backend, head="lm")}], [name]) as g:
            gen = ray.get(g.actors[0].generate.remote(prompts, 1, a.eval_max_new_tokens, 0.0, 0))
        answers[name] = [clean(o[0][0], a.pairs.first_line) or "(empty)" for o in gen]
    result = {"prompts": len(rows), "changed": sum(x != y for x, y in zip(answers["sft"], answers["dpo"]))}
    labelled = [r for r in rows if r["label"] is not None]
    for role, d in reward_dirs(root, cfg).items():
        with WorkerGroup(RewardActor, plan.roles["policy"], cfg.cluster,
                         [{"name": role, "model_dir": d, "backend": a.backend}], [role]) as g:
            actor = g.actors[0]
            p_first = ray.get(actor.compare.remote([r["prompt"] for r in labelled], [r["options"][0] for r in labelled],
                                                   [r["options"][1] for r in labelled]))
            acc = float(np.mean([(p > 0.5) == (r["label"] == 0) for p, r in zip(p_first, labelled)]))
            result[f"rm_accuracy_{role}"] = acc
            if role == "ceiling":
                p_dpo = ray.get(actor.compare.remote([r["prompt"] for r in rows], answers["dpo"], answers["sft"]))
                same = [x == y for x, y in zip(answers["sft"], answers["dpo"])]
                p_dpo = [0.5 if s else p for p, s in zip(p_dpo, same)]  # identical answers: a tie
                result["judge"] = win_tie_lose(p_dpo, a.tie_margin)
                result["mean_p_dpo"] = float(np.mean(p_dpo))
    examples = [{"prompt": r["prompt"], "sft": s, "dpo": d} for r, s, d in zip(rows[:5], answers["sft"], answers["dpo"])]
    (root / "align_eval").mkdir(exist_ok=True)
    (root / "align_eval" / "answers.json").write_text(json.dumps(
        [{"id": r["id"], "sft": s, "dpo": d} for r, s, d in zip(rows, answers["sft"], answers["dpo"])], indent=1))
    result["examples"] = examples
    j = result["judge"]
    log(f"align_eval: DPO vs SFT on {j['n']} test prompts: win {j['win']} / tie {j['tie']} / lose {j['lose']}; "
        f"reward-model pairwise accuracy w2s {result['rm_accuracy_w2s']:.3f}, ceiling {result['rm_accuracy_ceiling']:.3f}")
    return result


def plot_win_tie_lose(judge: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 1.8))
    left = 0
    for key, color in (("win", "#3a7"), ("tie", "#bbb"), ("lose", "#c33")):
        ax.barh([0], [judge[key]], left=left, color=color, label=f"{key} {judge[key]}")
        left += judge[key]
    ax.set_yticks([])
    ax.set_xlabel(f"test prompts (n={judge['n']}): DPO policy vs SFT policy, impartial judge")
    ax.legend(ncol=3, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.45))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
