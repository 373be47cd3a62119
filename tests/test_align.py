"""The alignment stages end to end on tiny models (configs/tiny_align.yaml): weak labels on
preference pairs -> Bradley-Terry W2S reward model + ground-truth judge -> DPO pairs (Ray Data,
policy and reward actors) -> cDPO on Ray Train -> win / tie / lose; the pairs load in TRL."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import tiny_run_config
from pipelines.align import align_intervals, reward_dirs, win_tie_lose
from pipelines.dpo_pairs import PairsConfig, pick_pair, weak_ensemble_scores


def test_weak_ensemble_scores_eq10_eq11_by_hand():
    # two weak models, three candidates; P = exp(logp): model 1 [0.5, 0.2, 0.1], model 2 [0.1, 0.6, 0.2]
    logps = [np.log([0.5, 0.2, 0.1]).tolist(), np.log([0.1, 0.6, 0.2]).tolist()]
    s = weak_ensemble_scores(logps, [0.25, 0.75])
    assert s == pytest.approx([0.25 * 0.5 + 0.75 * 0.1, 0.25 * 0.2 + 0.75 * 0.6, 0.25 * 0.1 + 0.75 * 0.2])
    assert pick_pair(["a", "b", "c"], s) == (1, 2)  # Eq. 10 argmax: 0.5; Eq. 11 argmin: 0.175
    assert pick_pair(["a", "a"], [1.0, 0.0]) is None  # no preference between equal texts
    assert pick_pair(["a", "a", "b"], [1.0, 1.0, 0.5]) == (0, 2)


def test_regroup_inverts_flattening():
    from actors.reward_model import regroup

    assert regroup([1, 2, 3, 4, 5, 6], [2, 1, 3]) == [[1, 2], [3], [4, 5, 6]]
    assert regroup([], [0, 0]) == [[], []]


def test_win_tie_lose_counts():
    out = win_tie_lose([0.9, 0.5, 0.52, 0.1, 0.56], margin=0.05)
    assert (out["win"], out["tie"], out["lose"], out["n"]) == (2, 2, 1, 5)


def test_align_intervals_by_hand():
    # every resample of a constant column is that constant: the intervals are worked out by hand
    out = align_intervals({"w2s": np.ones(6), "ceiling": np.zeros(6)}, [0.9] * 4, margin=0.05, n_boot=50)
    assert out["rm_accuracy"] == {"w2s": [1.0, 1.0], "ceiling": [0.0, 0.0]}
    assert out["rm_accuracy_w2s_minus_ceiling"] == [1.0, 1.0]
    assert out["judge"] == {"win_rate": [1.0, 1.0], "lose_rate": [0.0, 0.0], "win_minus_lose": [1.0, 1.0]}
    # paired: the same rows resampled for both reward models, so equal columns differ by exactly 0
    same = np.array([1, 0, 1, 1, 0, 0, 1, 0], dtype=float)
    out = align_intervals({"w2s": same, "ceiling": same}, [0.9, 0.1, 0.5, 0.52], margin=0.05, n_boot=400)
    assert out["rm_accuracy_w2s_minus_ceiling"] == [0.0, 0.0]
    lo, hi = out["rm_accuracy"]["w2s"]
    assert 0.0 < lo < 0.5 < hi < 1.0  # a 50% accuracy on 8 rows: a wide interval around 0.5
    # win - lose of (win, tie, lose, tie) lies in [-1, 1] and is an exact multiple of 1/4
    wl = out["judge"]["win_minus_lose"]
    assert -1 <= wl[0] <= 0 <= wl[1] <= 1 and all(abs(x * 4 - round(x * 4)) < 1e-12 for x in wl)


def test_reward_dirs_pair_each_w2s_reward_model_with_its_ground_truth_twin(tmp_path):
    bt = tiny_run_config(tmp_path / "bt", "tiny_align")
    assert reward_dirs(bt.root, bt) == {"w2s": str(bt.root / "reward_model" / "model"),
                                        "ceiling": str(bt.root / "reward_ceiling" / "model")}
    judge = tiny_run_config(tmp_path / "j", "tiny_align", **{"reward.kind": "judge"})
    assert reward_dirs(judge.root, judge) == {"w2s": str(judge.root / "strong_w2s" / "naive" / "model"),
                                              "ceiling": str(judge.root / "strong_ceiling" / "model")}


def test_pairs_config_rejects_bad_values():
    # the class names its own field; the loader adds the section (align.pairs.scorer: ...)
    with pytest.raises(ValueError, match="^num_responses: "):
        PairsConfig(num_responses=1)
    with pytest.raises(ValueError, match="^endpoint: "):
        PairsConfig(scorer="endpoint")
    with pytest.raises(ValueError, match="^align.pairs.scorer: must be one of"):
        tiny_run_config("/tmp/x", "tiny_align", **{"align.pairs.scorer": "oracle"})


@pytest.fixture(scope="module")
def align_run(ray_cluster, tmp_path_factory):
    from pipelines.run import run

    root = tmp_path_factory.mktemp("align")
    cfg = tiny_run_config(root / "run", profile="tiny_align")
    logs: list[str] = []
    metrics = run(cfg, logs.append)
    return cfg, metrics, logs


def test_alignment_end_to_end(align_run):
    cfg, metrics, _ = align_run
    root = cfg.root
    meta = json.loads((root / "reward_model" / "model" / "w2s_reward.json").read_text())
    assert meta["kind"] == "bt" and "{response}" in meta["format"]
    pairs = pq.read_table(root / "dpo_pairs" / "train.parquet").to_pylist()
    summary = json.loads((root / "dpo_pairs" / "_SUCCESS.json").read_text())
    assert summary["prompts"] == 16 and summary["pairs"] == len(pairs) > 0
    for p in pairs:  # chosen: the best-scored response, rejected: the worst
        assert p["chosen"] != p["rejected"] and p["score_chosen"] == max(p["scores"])
        assert p["score_rejected"] == min(s for r, s in zip(p["responses"], p["scores"]) if r != p["chosen"])
        assert p["prompt"].endswith("\nSolution:") and "Which solution" not in p["prompt"]  # a goal to answer
    al = metrics["alignment"]
    j = al["judge"]
    assert j["win"] + j["tie"] + j["lose"] == j["n"] == 8
    assert 0 <= al["rm_accuracy_w2s"] <= 1 and 0 <= al["rm_accuracy_ceiling"] <= 1
    ci = al["intervals"]["rm_accuracy"]["w2s"]
    assert ci[0] <= al["rm_accuracy_w2s"] <= ci[1]
    assert set(al["intervals"]["judge"]) == {"win_rate", "lose_rate", "win_minus_lose"}
    assert (root / "win_tie_lose.png").stat().st_size > 1000
    report = (root / "report.md").read_text()
    assert "Alignment" in report and "| prompt | SFT policy | DPO policy |" in report and "vs chance (0.5)" in report


def test_dpo_pairs_load_in_trl_dpo_trainer(align_run, tmp_path):
    """The generated dataset is TRL's preference format: DPOTrainer tokenizes it and batches it."""
    from training.dpo_trainer import DPOConfig as DPOStageConfig, DPOJob, build_trainer, dpo_config

    cfg, _, _ = align_run
    data = cfg.root / "dpo_pairs" / "train.parquet"
    job = DPOJob(name="load", policy="tiny:llama:7", data=str(data), out_dir=str(tmp_path),
                 config=DPOStageConfig(micro_batch=2, max_length=128, engine="torch"))
    trainer = build_trainer(job, dpo_config(job, str(tmp_path), on_gpu=False))
    batch = next(iter(trainer.get_train_dataloader()))
    # TRL stacks chosen over rejected: 2 pairs -> 4 sequences, one reference log-prob per side and pair
    assert batch["input_ids"].shape[0] == 4 and batch["ref_chosen_logps"].shape == (2,)
    assert len(trainer.train_dataset) == pq.read_metadata(data).num_rows
    assert "ref_chosen_logps" in trainer.train_dataset.column_names  # the separate reference pass


def test_rerun_skips_every_alignment_stage(align_run):
    from pipelines.run import run

    cfg, _, _ = align_run
    logs: list[str] = []
    run(cfg, logs.append)
    text = "\n".join(logs)
    for stage in ("reward_ceiling: complete, skipped", "reward_model: complete, skipped",
                  "dpo_pairs: complete, skipped", "dpo dpo: complete, skipped"):
        assert stage in text, stage


def test_weak_ensemble_scorer_end_to_end(align_run, tmp_path):
    """The DPO pair stage with `align.pairs.scorer: weak` (seed 003 Eq. 10-11) on the same held-out
    prompts: the weak actors' scores equal Eq. 10-11 recomputed in this process from each weak
    model's teacher-forced log-probabilities of the very responses the policy wrote."""
    from dataclasses import replace

    from actors.base import make_backend
    from pipelines.dpo_pairs import pairs_stage

    cfg, _, _ = align_run
    weak = cfg.weak.labelling(cfg.root)
    pcfg = replace(cfg.align.pairs, scorer="weak")
    summary = pairs_stage(cfg.root / "data" / "held_out", tmp_path / "pairs", pcfg, cfg.policy_spec,
                          replace(cfg.policy.backend, head="lm"), None, cfg.reward.backend, weak, cfg.cluster,
                          lambda s: None)
    table = pq.read_table(tmp_path / "pairs" / "_shards").to_pylist()  # every prompt, pairs or not
    assert len(table) == 16 and summary["prompts"] == 16 and summary["pairs"] > 0
    prompts = [r["prompt"] for r in table for _ in r["responses"]]
    conts = [" " + x for r in table for x in r["responses"]]
    logps = [[lp for lp, _ in make_backend(m.spec, m.backend).sequence_logprobs(prompts, conts)] for m in weak.models]
    expect = weak_ensemble_scores(logps, list(weak.weights))
    got = [s for r in table for s in r["scores"]]
    # random tiny models give sequence probabilities near 1e-30: compare their logarithms
    assert min(got) > 0 and np.log(got) == pytest.approx(np.log(expect), abs=1e-3)
    assert len({round(float(x), 3) for x in np.log(got)}) > len(table)  # the scores do differ
    pairs = pq.read_table(tmp_path / "pairs" / "train.parquet").to_pylist()
    for p in pairs:
        assert p["score_chosen"] == max(p["scores"]) and p["chosen"] != p["rejected"]
