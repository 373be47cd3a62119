"""Weak-to-strong search: the large model's chunk sampling and the small models' scores on tiny
real models, the summary by hand, and the search recipe end to end on a local Ray cluster
(configs/tiny_search.yaml: DPO of the small model on Ray Train, CBS / Best-of-N / sampling in one
streaming stage, the gold judge)."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.backend import BackendConfig
from actors.base import BackendActor
from conftest import tiny_run_config
from pipelines.search import MATCHES, gold_win_rates, search_summary, weak_pairs

CFG = BackendConfig(dtype="float32", threads=1)


@pytest.fixture(scope="module")
def large():
    return BackendActor("large", "tiny:llama:7", CFG)


def test_chunks_respect_budgets_and_seeds(large):
    out = large.sample_chunks(["The weak model said", "Hi"], ["", " there"], 3, [4, 2], 0.7, 0, seed=5)
    assert [len(r) for r in out] == [3, 3]
    assert all(0 < n <= 4 for _, n, _ in out[0]) and all(0 < n <= 2 for _, n, _ in out[1])
    assert large.sample_chunks(["The weak model said", "Hi"], ["", " there"], 3, [4, 2], 0.7, 0, seed=5) == out
    again = [large.sample_chunks(["Hi"], [""], 3, [4], 1.5, 0, seed=s)[0] for s in range(4)]
    assert len({tuple(c[0] for c in r) for r in again}) > 1  # other seeds, other samples


def test_top_k_1_is_greedy_and_chunks_continue_the_partial(large):
    greedy = large.generate(["The weak model said"], 1, 8)[0][0][0]
    first = large.sample_chunks(["The weak model said"], [""], 2, [4], 0.7, top_k=1, seed=1)[0]
    assert first[0] == first[1] and first[0][1] == 4 and not first[0][2]
    second = large.sample_chunks(["The weak model said"], [first[0][0]], 1, [4], 0.7, top_k=1, seed=2)[0][0]
    assert first[0][0] + second[0] == greedy  # the partial response is continued, not restarted


def test_a_stop_string_ends_the_chunk_and_is_cut(large):
    text = large.sample_chunks(["The weak model said"], [""], 1, [8], 0.7, top_k=1)[0][0][0]
    stop = text.split()[1]  # the second word: it ends the chunk before it
    cut = large.sample_chunks(["The weak model said"], [""], 1, [8], 0.7, top_k=1, stop=[stop])[0][0]
    assert cut[2] is True and stop not in cut[0] and text.startswith(cut[0]) and cut[1] < 8


def test_finished_responses_are_scored_with_the_end_token(large):
    eos = large.backend.tok.eos_token
    p, r = ["Goal: x\nSolution:"] * 3, [" stir it", " stir it", ""]
    got = large.response_logprobs(p, r, [False, True, False])
    assert got[0] == pytest.approx(large.sequence_logprobs(p[:1], [" stir it"])[0][0], abs=1e-5)
    assert got[1] == pytest.approx(large.sequence_logprobs(p[:1], [" stir it" + eos])[0][0], abs=1e-5)
    assert got[1] < got[0] and got[2] == 0.0  # the end token costs log p(end) < 0; nothing scores 0


def test_weak_pairs_choose_the_weak_label():
    rows = [{"id": "a", "prompt": "Goal: g", "options": ["one ", "two"], "weak_label": 1},
            {"id": "b", "prompt": "Goal: h", "options": ["x", "y"], "weak_label": 0}]
    assert weak_pairs(rows, "{prompt}\nSolution:") == [
        {"id": "a", "prompt": "Goal: g\nSolution:", "chosen": " two", "rejected": " one"},
        {"id": "b", "prompt": "Goal: h\nSolution:", "chosen": " x", "rejected": " y"}]
    with pytest.raises(ValueError, match="K = 2"):
        weak_pairs([{"id": "c", "prompt": "p", "options": ["a", "b", "c"], "weak_label": 0}], "{prompt}")


def test_summary_by_hand():
    # two prompts; P(cbs > bon), P(cbs > sample), P(bon > sample)
    p = {("cbs", "bon"): [0.9, 0.5], ("cbs", "sample"): [0.8, 0.2], ("bon", "sample"): [0.6, 0.4]}
    cols = {"id": ["a", "b"]}
    for d in ("cbs", "bon", "sample"):
        cols |= {f"{d}_generated": [10, 20], f"{d}_tokens": [5, 5], f"{d}_scored": [4, 6], f"{d}_score": [0.0, 1.0]}
    cols |= {f"p_{a}_over_{b}": p[(a, b)] for a, b in MATCHES}
    table = pa.table(cols)
    gold = gold_win_rates(table)
    assert gold["cbs"] == pytest.approx([(0.9 + 0.8) / 2, (0.5 + 0.2) / 2])
    assert gold["bon"] == pytest.approx([(0.1 + 0.6) / 2, (0.5 + 0.4) / 2])
    assert gold["sample"] == pytest.approx([(0.2 + 0.4) / 2, (0.8 + 0.6) / 2])
    s = search_summary(table, margin=0.05, n_boot=200)
    m = s["matches"]["cbs_vs_sample"]
    assert (m["win"], m["tie"], m["lose"]) == (1, 0, 1) and m["mean_p"] == pytest.approx(0.5)
    assert s["matches"]["cbs_vs_bon"]["tie"] == 1  # 0.5 is a tie
    assert s["cost"]["cbs"]["scored_per_generated_token"] == pytest.approx(10 / 30)
    assert sum(s["gold"][d]["mean"] for d in gold) == pytest.approx(1.5)  # round robin: 3 pairs / 2


def test_tune_on_weak_train_prefers_the_true_solution(tmp_path):
    from cluster.loader import load_config
    from pipelines.data import prepare_data
    from pipelines.run import RunConfig
    from pipelines.search import tuning_rows

    tiny = Path(__file__).parents[1] / "configs" / "tiny_search.yaml"
    cfg = load_config(RunConfig, tiny, [f"run_dir={tmp_path}", "search.tune_on=weak_train", "data.weak_train=6"])
    prepare_data(cfg.data, cfg.root / "data", log=lambda m: None)
    rows = tuning_rows(cfg)
    pairs = weak_pairs(rows, cfg.search.prompt_format)
    assert len(pairs) == 6 and all(p["chosen"] == " " + r["options"][r["label"]].strip() for p, r in zip(pairs, rows))
    with pytest.raises(ValueError, match=r"search\.tune_on"):
        load_config(RunConfig, tiny, [f"run_dir={tmp_path}", "search.tune_on=test"])
    empty = load_config(RunConfig, tiny, [f"run_dir={tmp_path / 'e'}", "search.tune_on=weak_train"])
    prepare_data(empty.data, empty.root / "data", log=lambda m: None)
    with pytest.raises(ValueError, match=r"data\.weak_train"):
        tuning_rows(empty)


@pytest.fixture(scope="module")
def search_run(ray_cluster, tmp_path_factory):
    from pipelines.run import run

    cfg = tiny_run_config(tmp_path_factory.mktemp("search") / "run", "tiny_search")
    logs: list[str] = []
    return cfg, run(cfg, logs.append), logs


def test_search_run_decodes_three_ways_and_judges(search_run):
    cfg, metrics, logs = search_run
    s = cfg.search
    res = metrics["search"]
    assert res["prompts"] == 4 and res["models"]["tuned"] == str(cfg.root / "search_tuned" / "model")
    rows = json.loads((cfg.root / "search" / "answers.json").read_text())
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in _test_rows(cfg))
    for r in rows:
        # Best-of-N: one call of N whole samples; sampling: one sample; CBS: W*K, then K per live beam
        assert r["bon_samples"] == s.width * s.successors and r["bon_steps"] == 1 and r["bon_scored"] == 4
        assert r["sample_samples"] == 1 and r["sample_scored"] == 1
        assert r["cbs_samples"] >= s.width * s.successors and r["cbs_steps"] <= -(-s.max_new_tokens // s.chunk_tokens)
        assert r["cbs_samples"] <= s.width * s.successors * r["cbs_steps"]
        for d in ("cbs", "bon", "sample"):
            assert 0 < r[f"{d}_tokens"] <= s.max_new_tokens and r[f"{d}_generated"] >= r[f"{d}_tokens"]
        assert all(0 <= r[f"p_{a}_over_{b}"] <= 1 for a, b in MATCHES)
    assert sum(g["mean"] for g in res["gold"].values()) == pytest.approx(1.5)
    assert (cfg.root / "report.md").is_file() and (cfg.root / "search.png").stat().st_size > 0
    assert "Weak-to-strong search" in (cfg.root / "report.md").read_text()


def test_the_steer_margin_is_tuned_minus_untuned_on_the_true_pairs(search_run):
    # recomputed in-process for one row: s(right) - s(wrong), s = log pi_tuned - log pi_untuned
    cfg, metrics, _ = search_run
    rows = {r["id"]: r for r in json.loads((cfg.root / "search" / "answers.json").read_text())}
    first = _test_rows(cfg)[0]
    be = BackendConfig(dtype="float32", max_length=128, max_batch_tokens=1024)
    tuned = BackendActor("t", str(cfg.root / "search_tuned" / "model"), be)
    untuned = BackendActor("u", cfg.weak.models[0].spec, be)
    p = [rows[first["id"]]["prompt"]] * 2
    ys = [" " + o.strip() for o in first["options"]]
    s = [a - b for a, b in zip(tuned.response_logprobs(p, ys, [True, True]), untuned.response_logprobs(p, ys, [True, True]))]
    y = first["label"]
    assert rows[first["id"]]["steer_margin"] == pytest.approx(s[y] - s[1 - y], abs=1e-4)
    margins = np.array([r["steer_margin"] for r in rows.values()])
    acc = metrics["search"]["steer_accuracy"]
    assert acc["n"] == 4 and acc["mean"] == pytest.approx(np.mean((margins > 0) + 0.5 * (margins == 0)))
    assert "Does the steer carry the task?" in (cfg.root / "report.md").read_text()
    # the judge on the same pairs: its accuracy is the share of positive margins
    jm = np.array([r["judge_margin"] for r in rows.values()])
    ja = metrics["search"]["judge_accuracy"]
    assert ja["n"] == 4 and ja["mean"] == pytest.approx(np.mean((jm > 0) + 0.5 * (jm == 0)))
    assert np.all(np.abs(jm) <= 0.5) and "Is the judge right?" in (cfg.root / "report.md").read_text()


def test_judge_margin_is_signed_by_the_true_label():
    from pipelines.search import judge_margin

    assert judge_margin({"options": ["a", "b"], "label": 0}, 0.8) == pytest.approx(0.3)
    assert judge_margin({"options": ["a", "b"], "label": 1}, 0.8) == pytest.approx(-0.3)
    assert np.isnan(judge_margin({"options": ["a", "b", "c"], "label": 1}, 0.8))


def test_the_tuned_model_is_dpo_of_the_untuned_one(search_run):
    from actors.registry import load_model

    cfg, metrics, _ = search_run
    tuned_dir = cfg.root / "search_tuned" / "model"
    pairs = pq.read_table(cfg.root / "search_tuned" / "pairs.parquet").to_pylist()
    assert len(pairs) == 8 and all(p["prompt"].endswith("\nSolution:") for p in pairs)
    a, _ = load_model(str(tuned_dir), "causal_lm")
    b, _ = load_model(cfg.weak.models[0].spec, "causal_lm")
    diffs = [float((x - y).abs().max()) for x, y in zip(a.state_dict().values(), b.state_dict().values())]
    assert max(diffs) > 0  # DPO moved the weights away from its reference


def test_rerun_skips_every_stage(search_run):
    from pipelines.run import run

    cfg, metrics, _ = search_run
    logs: list[str] = []
    again = run(cfg, logs.append)
    assert any("search: complete, skipped" in line for line in logs)
    assert again["search"]["gold"] == metrics["search"]["gold"]


def test_a_retrained_tuned_model_makes_the_old_search_conflict(search_run):
    from pipelines.runner import StageConflict
    from pipelines.search import stage_search

    cfg, _, _ = search_run
    ok = cfg.root / "search_tuned" / "_SUCCESS.json"
    saved = ok.read_text()
    try:
        ok.write_text(json.dumps({**json.loads(saved), "fingerprint": "another"}))
        with pytest.raises(StageConflict):
            stage_search(cfg, log=lambda m: None)
    finally:
        ok.write_text(saved)


def _test_rows(cfg):
    from pipelines.data import read_split

    return read_split(cfg.root / "data" / "test")
