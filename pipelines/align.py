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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.data import fingerprint
from pipelines.evaluate import interval
from pipelines.dpo_pairs import PairsConfig, clean, pairs_stage
from pipelines.runner import Role, StageConflict, StreamStage, read_complete, run_stage
from training.dpo_config import DPOConfig


@dataclass
class AlignConfig:
    enabled: bool = False
    pairs: PairsConfig = field(default_factory=PairsConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    eval_max_new_tokens: int = 32
    tie_margin: float = 0.05  # |P(DPO preferred) - 0.5| <= tie_margin counts as a tie

    def __post_init__(self):
        if not 0 <= self.tie_margin < 0.5:
            raise ValueError("tie_margin: must be in [0, 0.5)")
        if self.eval_max_new_tokens < 1:
            raise ValueError("eval_max_new_tokens: must be >= 1")


def reward_dirs(root: Path, cfg) -> dict[str, str]:
    """The W2S reward model and the impartial judge. bt: two Bradley-Terry heads (weak labels /
    ground truth); judge: the option-choice models strong_w2s/<judge_method> and strong_ceiling,
    trained on weak labels / ground truth of the same held_out rows."""
    if cfg.reward.kind == "bt":
        return {"w2s": str(root / "reward_model" / "model"), "ceiling": str(root / "reward_ceiling" / "model")}
    return {"w2s": str(root / "strong_w2s" / cfg.reward.judge_method / "model"),
            "ceiling": str(root / "strong_ceiling" / "model")}


def stage_reward(cfg, log=print) -> dict:
    from pipelines.annotate import read_weak_labels
    from pipelines.data import read_split
    from actors.reward_model import save_reward_meta
    from pipelines.train_stages import reward_stage

    root = cfg.root
    if cfg.reward.kind == "judge":  # both models are trained already: mark them as judges
        dirs = reward_dirs(root, cfg)
        for d in dirs.values():
            save_reward_meta(d, "judge", template=asdict(cfg.template), max_length=cfg.strong.train.max_length)
        log(f"reward: option-choice judges, w2s {dirs['w2s']}, ceiling {dirs['ceiling']}")
        return {role: {"model_dir": d} for role, d in dirs.items()}
    held_out = read_split(root / "data" / "held_out")
    rows = read_weak_labels(root / "weak_labels").to_pylist()
    return {"ceiling": reward_stage(root, cfg.reward, cfg.strong.spec, held_out, "truth", root / "reward_ceiling", log),
            "w2s": reward_stage(root, cfg.reward, cfg.strong.spec, rows, "weak", root / "reward_model", log)}


def stage_pairs(cfg, log=print) -> dict:
    backend = replace(cfg.policy.backend, head="lm")
    return pairs_stage(cfg.root / "data" / "held_out", cfg.root / "dpo_pairs", cfg.align.pairs,
                       cfg.policy_spec, backend, reward_dirs(cfg.root, cfg)["w2s"],
                       cfg.reward.backend, cfg.weak.labelling(cfg.root), cfg.cluster, log)


def stage_dpo(cfg, log=print) -> dict:
    from training.dpo_trainer import DPOJob, run_dpo_stage

    job = DPOJob(name="dpo", policy=cfg.policy_spec, out_dir=str(cfg.root / "dpo"), config=cfg.align.dpo,
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


def match_summary(p: list[float], margin: float, n_boot: int = 2000, seed: int = 0) -> dict:
    """win / tie / lose of a over b by the judge (P(a preferred) per prompt, win_tie_lose's rule),
    with 95% percentile bootstrap intervals over prompts for the win rate, lose rate and win - lose."""
    x = np.asarray(p, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    wins, loses = (x[idx] > 0.5 + margin).mean(1), (x[idx] < 0.5 - margin).mean(1)
    return {**win_tie_lose(x.tolist(), margin), "mean_p": float(x.mean()), "win_rate_ci": interval(wins),
            "lose_rate_ci": interval(loses), "win_minus_lose_ci": interval(wins - loses)}


def length_bias(a: list[str], b: list[str], p: list[float], margin: float) -> dict:
    """How much a judge's verdicts follow answer length: over the rows the judge decides (|p - 0.5|
    > margin) whose answers differ in length, the share where it prefers the longer one (0.5: no
    lean); with each side's mean length in characters. None when no row qualifies."""
    la, lb, x = np.array([len(t) for t in a]), np.array([len(t) for t in b]), np.asarray(p, dtype=np.float64)
    use = (np.abs(x - 0.5) > margin) & (la != lb)
    longer = ((x > 0.5) == (la > lb))[use]
    return {"rows": int(use.sum()), "longer_preferred": float(longer.mean()) if use.any() else None,
            "mean_chars_a": float(la.mean()), "mean_chars_b": float(lb.mean())}


def match_lines(matches: dict[str, dict]) -> list[str]:
    """The report table of `match_summary` results, one row per match (named by its key)."""
    lines = ["| match | win | tie | lose | win rate [95% CI] | win - lose [95% CI] |", "|---|---|---|---|---|---|"]
    for k, v in matches.items():
        (wl, wh), (dl, dh) = v["win_rate_ci"], v["win_minus_lose_ci"]
        verdict = "" if dl > 0 or dh < 0 else " (within noise)"
        lines.append(f"| {k} | {v['win']} | {v['tie']} | {v['lose']} | {v['win_rate']:.3f} [{wl:.3f}, {wh:.3f}] | "
                     f"{v['win_rate'] - v['lose_rate']:+.3f} [{dl:+.3f}, {dh:+.3f}]{verdict} |")
    return lines


def check_judged_answers(cfg) -> None:
    """The fields every stage that answers prompts and has them judged shares (search.*, macpo.*):
    prompt_format, stop strings, tie_margin, batch_rows, max_in_flight."""
    if "{prompt}" not in cfg.prompt_format:
        raise ValueError("prompt_format: must contain {prompt}")
    if not isinstance(cfg.stop, list) or not all(isinstance(x, str) and x for x in cfg.stop):
        raise ValueError(f"stop: must be a list of non-empty strings, got {cfg.stop!r}")
    if not 0 <= cfg.tie_margin < 0.5:
        raise ValueError("tie_margin: must be in [0, 0.5)")
    for name in ("batch_rows", "max_in_flight"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}: must be >= 1")


def align_intervals(rm_correct: dict[str, np.ndarray], p_dpo: list[float], margin: float,
                    n_boot: int = 2000, seed: int = 0) -> dict:
    """95% percentile bootstrap intervals over the test rows: each reward model's pairwise accuracy
    (rm_correct: role -> 0/1 per labelled row, resampled paired, with the w2s - ceiling difference)
    and the judge's win rate, lose rate and win - lose (p_dpo per prompt, win_tie_lose's rule)."""
    rng = np.random.default_rng(seed)
    out: dict = {"n_boot": n_boot, "rm_accuracy": {}}
    if rm_correct:
        mat = np.stack([np.asarray(v, dtype=np.float64) for v in rm_correct.values()])
        boot = mat[:, rng.integers(0, mat.shape[1], size=(n_boot, mat.shape[1]))].mean(axis=2)
        out["rm_accuracy"] = {role: interval(b) for role, b in zip(rm_correct, boot)}
        if {"w2s", "ceiling"} <= set(rm_correct):
            roles = list(rm_correct)
            out["rm_accuracy_w2s_minus_ceiling"] = interval(boot[roles.index("w2s")] - boot[roles.index("ceiling")])
    p = np.asarray(p_dpo, dtype=np.float64)
    if p.size:
        pb = p[rng.integers(0, p.size, size=(n_boot, p.size))]
        win, lose = (pb > 0.5 + margin).mean(axis=1), (pb < 0.5 - margin).mean(axis=1)
        out["judge"] = {"win_rate": interval(win), "lose_rate": interval(lose), "win_minus_lose": interval(win - lose)}
    return out


ANSWER_SCHEMA = pa.schema([("id", pa.string()), ("answer", pa.string())])
JUDGE_SCHEMA = pa.schema([("id", pa.string()), ("label", pa.int64()), ("p_first_w2s", pa.float64()),
                          ("p_first_ceiling", pa.float64()), ("p_dpo", pa.float64())])


def answer_batch(batch: pa.Table, *, actors: dict, prompt_format: str, max_new_tokens: int, first_line: bool) -> pa.Table:
    """One policy's greedy answers to a batch of test prompts ("(empty)" for an empty one)."""
    import ray

    rows = batch.to_pylist()
    prompts = [prompt_format.replace("{prompt}", r["prompt"]) for r in rows]
    gen = ray.get(actors["policy"][0].generate.remote(prompts, 1, max_new_tokens, 0.0, 0))
    return pa.Table.from_pylist([{"id": r["id"], "answer": clean(o[0][0], first_line) or "(empty)"}
                                 for r, o in zip(rows, gen)], schema=ANSWER_SCHEMA)


def judge_batch(batch: pa.Table, *, actors: dict, answers: dict) -> pa.Table:
    """Per test row: P(first option preferred) by both reward models (labelled rows) and the
    judge's P(DPO answer preferred over the SFT answer); identical answers are a tie (0.5)."""
    import ray

    rows = batch.to_pylist()
    w2s, ceiling = actors["reward"]
    lab = [r for r in rows if r["label"] is not None]
    args = ([r["prompt"] for r in lab], [r["options"][0] for r in lab], [r["options"][1] for r in lab])
    first = {"w2s": ray.get(w2s.compare.remote(*args)), "ceiling": ray.get(ceiling.compare.remote(*args))}
    sft, dpo = [answers[r["id"]][0] for r in rows], [answers[r["id"]][1] for r in rows]
    p_dpo = ray.get(ceiling.compare.remote([r["prompt"] for r in rows], dpo, sft))
    by_id = {r["id"]: i for i, r in enumerate(lab)}
    return pa.Table.from_pylist([
        {"id": r["id"], "label": r["label"],
         "p_first_w2s": first["w2s"][by_id[r["id"]]] if r["id"] in by_id else None,
         "p_first_ceiling": first["ceiling"][by_id[r["id"]]] if r["id"] in by_id else None,
         "p_dpo": 0.5 if s == d else p} for r, s, d, p in zip(rows, sft, dpo, p_dpo)], schema=JUDGE_SCHEMA)


def policy_answers(cfg, name: str, spec: str, log=print) -> dict[str, str]:
    """Greedy answers of one policy to the test prompts (a stage of the runner): id -> answer."""
    from actors.strong import StrongActor

    a, out_dir = cfg.align, cfg.root / "align_eval" / name
    backend = replace(cfg.policy.backend, head="lm")
    run_stage(StreamStage(
        kind="align_eval/answers", split_dir=cfg.root / "data" / "test", out_dir=out_dir, label=f"align_eval {name}",
        config={"spec": spec, "backend": asdict(backend), "prompt_format": a.pairs.prompt_format,
                "max_new_tokens": a.eval_max_new_tokens, "first_line": a.pairs.first_line},
        what="align_eval policy", describe=f"greedy answers of the {name} policy ({spec})",
        roles=[Role("policy", StrongActor, [{"name": name, "spec": spec, "backend": backend}], [name])],
        batch_fn=answer_batch, batch_rows=a.pairs.batch_rows, schema=ANSWER_SCHEMA,
        batch_kwargs={"prompt_format": a.pairs.prompt_format, "max_new_tokens": a.eval_max_new_tokens,
                      "first_line": a.pairs.first_line},
        finalize=lambda table, run: {"line": f"{table.num_rows} answers"}), cfg.cluster, log)
    t = read_complete(out_dir / "_shards", cfg.root / "data" / "test", ANSWER_SCHEMA)
    return dict(zip(t["id"].to_pylist(), t["answer"].to_pylist()))


def stage_align_eval(cfg, log=print) -> dict:
    """Test prompts: SFT vs DPO policy answers (one runner stage each) judged by the ground-truth
    reward model, and both reward models' pairwise accuracy on the labelled test pairs (one
    runner stage with the two reward actors)."""
    from actors.reward import RewardActor
    from pipelines.data import read_split

    a, root = cfg.align, cfg.root
    sft = policy_answers(cfg, "sft", cfg.policy_spec, log)
    dpo = policy_answers(cfg, "dpo", str(root / "dpo" / "model"), log)
    dirs = reward_dirs(root, cfg)

    def finalize(table: pa.Table, run: dict) -> dict:
        t = table.to_pylist()
        lab = [r for r in t if r["label"] is not None]
        correct = {role: np.array([(r[f"p_first_{role}"] > 0.5) == (r["label"] == 0) for r in lab], dtype=np.float64)
                   for role in ("w2s", "ceiling")}
        p_dpo = [r["p_dpo"] for r in t]
        return {**{f"rm_accuracy_{role}": float(c.mean()) for role, c in correct.items()},
                "judge": win_tie_lose(p_dpo, a.tie_margin), "mean_p_dpo": float(np.mean(p_dpo)),
                "intervals": align_intervals(correct, p_dpo, a.tie_margin)}

    judged = run_stage(StreamStage(
        kind="align_eval/judge", split_dir=root / "data" / "test", out_dir=root / "align_eval" / "judge",
        config={"reward_dirs": dirs, "backend": asdict(cfg.reward.backend), "tie_margin": a.tie_margin,
                "answers": fingerprint({"sft": sft, "dpo": dpo})},
        what="align_eval judge", describe="the impartial judge (reward_ceiling) and the W2S reward model",
        roles=[Role("reward", RewardActor, [{"name": role, "model_dir": d, "backend": cfg.reward.backend}
                                            for role, d in dirs.items()], list(dirs))],
        batch_fn=judge_batch, batch_rows=a.pairs.batch_rows, schema=JUDGE_SCHEMA,
        batch_kwargs={"answers": {i: (sft[i], dpo[i]) for i in sft}}, finalize=finalize), cfg.cluster, log)
    rows = read_split(root / "data" / "test")
    result = {"prompts": len(rows), "changed": sum(sft[r["id"]] != dpo[r["id"]] for r in rows),
              **{k: judged[k] for k in ("rm_accuracy_w2s", "rm_accuracy_ceiling", "judge", "mean_p_dpo", "intervals")}}
    (root / "align_eval" / "answers.json").write_text(json.dumps(
        [{"id": r["id"], "sft": sft[r["id"]], "dpo": dpo[r["id"]]} for r in rows], indent=1))
    result["examples"] = [{"prompt": r["prompt"], "sft": sft[r["id"]], "dpo": dpo[r["id"]]} for r in rows[:8]]
    j = result["judge"]
    log(f"align_eval: DPO vs SFT on {j['n']} test prompts: win {j['win']} / tie {j['tie']} / lose {j['lose']}; "
        f"reward-model pairwise accuracy w2s {result['rm_accuracy_w2s']:.3f}, ceiling {result['rm_accuracy_ceiling']:.3f}")
    return result
