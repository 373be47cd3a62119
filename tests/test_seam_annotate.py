"""SEAM annotation stage (pipelines/seam_annotate.py) on the shared local Ray cluster.

Tiny random models (strong tiny:llama:7, weak tiny:llama:1) and 6 PIQA preference rows in
batches of 3: the stage writes one row per input, the trees obey the search rules, the
baselines' columns match direct scoring, the tree-information filter keeps half, a re-run is
skipped (another config refused), a partial run resumes. Fake actors (no models) show that a
batch makes O(max_depth) actor calls however many rows it holds.
"""

import json
import shutil
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.backend import BackendConfig
from actors.model_config import ModelConfig
from cluster.config import ClusterConfig
from pipelines import seam
from pipelines.data import DataConfig, prepare_data, read_split
from actors.prompts import TemplateConfig, render
from pipelines.seam_annotate import LABELS_FILE, SeamStageConfig, read_seam_labels, seam_batch, seam_stage

STRONG, WEAK = "tiny:llama:7", "tiny:llama:1"
BACKEND = BackendConfig(dtype="float32", max_length=256, max_batch_tokens=2048)
TEMPLATE = TemplateConfig(template="{prompt}\nSolutions: {options}\nAnswer:", option_line="{option}",
                          option_sep=" | ", answer="text")
CLUSTER = ClusterConfig(num_cpus=2, cpus_per_actor=0.25)
SEAM = seam.SeamConfig(max_depth=2, thought_max_new_tokens=6)
STAGE = SeamStageConfig(batch_rows=3, max_in_flight=2, auxconf_threshold=0.5)
ROWS = 6


def _weak():
    return ModelConfig(spec=WEAK, name="weak", backend=BACKEND)


def _stage(split, out, logs, cfg=SEAM, stage=STAGE):
    return seam_stage(split, out, cfg, STRONG, BACKEND, _weak(), TEMPLATE, CLUSTER, logs.append, stage)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    d = tmp_path_factory.mktemp("seam_data")
    prepare_data(DataConfig(source="embedded:piqa_pairs", weak_train=0, held_out=ROWS, test=0, shard_rows=3,
                            max_prompt_chars=200), d, lambda m: None)
    return d / "held_out"


@pytest.fixture(scope="module")
def seam_run(ray_cluster, split, tmp_path_factory):
    out = tmp_path_factory.mktemp("seam_out") / "seam_labels"
    logs = []
    summary = _stage(split, out, logs)
    return out, summary, logs


def test_one_row_per_input_with_trees_that_obey_the_rules(seam_run, split):
    out, summary, logs = seam_run
    table = read_seam_labels(out)
    rows = table.to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in read_split(split))
    assert summary["rows"] == ROWS and summary["rows_new"] == ROWS
    names = seam.load_principles(SEAM.principles_path).names
    for r in rows:
        tree = json.loads(r["tree"])
        assert tree[0]["chain"] == [] and tree[0]["score"] == 0.0 and 1 <= len(tree) - 1 <= SEAM.max_depth
        assert r["tree_depth"] == len(tree) - 1
        for k in range(1, len(tree)):
            assert tree[k]["chain"][:-1] == tree[k - 1]["chain"] and tree[k]["chain"][-1] in names  # one more principle
            # path score i(n) = H_init - H(x, t(n)) from the strong model's probabilities
            assert tree[k]["score"] == pytest.approx(1.0 - seam.entropy(tree[k]["probs"]))
            assert tree[k]["gain"] == (tree[k]["score"] > tree[k - 1]["score"])
            # Rule 2: a path node never scores below its predecessor, except the one Rule 3 stopped at
            if not (r["stop_reason"] == "rule3" and k == len(tree) - 1):
                assert tree[k]["score"] >= tree[k - 1]["score"]
        assert r["stop_reason"] in ("max_depth", "rule3", "exhausted")
        scores = [n["score"] for n in tree]
        assert r["hidden"] == seam.select_hidden_node(scores)
        if r["hidden"] is not None:  # n_h: the deepest node with a gain; its thought is the knowledge
            assert tree[r["hidden"]]["gain"] and not any(n["gain"] for n in tree[r["hidden"] + 1:])
            assert r["knowledge"] == (tree[r["hidden"]]["thought"] or None)
        assert r["tree_information"] == pytest.approx(seam.tree_information(scores))
        expanded = json.loads(r["expanded"])
        assert sum(not n["backtraced"] for n in expanded) == len(tree) - 1  # every path node was scored once
        assert r["weak_label"] == int(np.argmax(r["weak_probs"])) and sum(r["weak_probs"]) == pytest.approx(1.0)
    assert any(r["hidden"] is not None for r in rows)
    line = [m for m in logs if m.startswith("seam seam_labels: 6 rows (6 new) in")]
    assert line and "rows/s" in line[0] and "strong forward calls per row" in line[0]
    assert summary["strong_forwards_per_row"] > 0 and summary["weak_forwards_per_row"] > 0


def test_baselines_and_decision_match_direct_scoring(seam_run):
    from actors.hf_backend import HFBackend

    out, summary, _ = seam_run
    rows = read_seam_labels(out).to_pylist()
    strong, weak = HFBackend(STRONG, BACKEND), HFBackend(WEAK, BACKEND)
    r = rows[0]
    text, labels = render(r["prompt"], r["options"], range(2), TEMPLATE)
    assert r["strong_probs"] == pytest.approx(strong.score_texts([text], [labels])[0].tolist(), abs=1e-5)
    assert r["naive_probs"] == pytest.approx(weak.score_texts([text], [labels])[0].tolist(), abs=1e-5)
    # the weak decision saw t(n_h) before the prompt
    text, labels = render(seam.with_knowledge(r["prompt"], r["knowledge"], SEAM), r["options"], range(2), TEMPLATE)
    assert r["weak_probs"] == pytest.approx(weak.score_texts([text], [labels])[0].tolist(), abs=1e-5)
    s = np.array([x["strong_probs"] for x in rows])
    w = np.array([x["naive_probs"] for x in rows])
    assert [x["self_reward_label"] for x in rows] == seam.self_reward(s).tolist()
    assert [x["naive_label"] for x in rows] == w.argmax(1).tolist()
    assert [x["ws_ensemble_label"] for x in rows] == seam.ws_ensemble(s, w)[0].tolist()
    assert [x["wsc_keep"] for x in rows] == seam.wsc_filter(s, w)[1].tolist()
    labels, corrected = seam.auxconf_correction(s, w, STAGE.auxconf_threshold)
    assert [x["auxconf_label"] for x in rows] == labels.tolist()
    assert [x["auxconf_corrected"] for x in rows] == corrected.tolist()
    y = np.array([x["label"] for x in rows])
    t2 = summary["table2"]
    assert t2["naive"]["accuracy"] == pytest.approx((w.argmax(1) == y).mean())
    assert t2["seam_no_filter"]["accuracy"] == pytest.approx(np.mean([x["weak_label"] == x["label"] for x in rows]))


def test_tree_information_filter_keeps_half(seam_run):
    out, summary, _ = seam_run
    rows = read_seam_labels(out).to_pylist()
    kept = [r["kept"] for r in rows]
    assert sum(kept) == ROWS // 2 == summary["kept"] == summary["table2"]["seam"]["rows"]
    info = [r["tree_information"] for r in rows]
    assert min(i for i, k in zip(info, kept) if k) >= max(i for i, k in zip(info, kept) if not k)
    assert kept == seam.filter_mask(info, SEAM).tolist()
    assert sum(r["uncertain_keep"] for r in rows) == ROWS // 2
    kept_acc = np.mean([r["weak_label"] == r["label"] for r in rows if r["kept"]])
    assert summary["table2"]["seam"]["accuracy"] == pytest.approx(kept_acc)


def test_actor_calls_per_batch_grow_with_depth_not_rows(seam_run):
    _, summary, _ = seam_run
    assert summary["batches"] == 2 and summary["batch_rows"] == [3, 3]
    bound = 3 * 2 * SEAM.max_depth + 1  # <= 2 * max_depth steps (one backtrace per level), 3 calls each, + decide
    for calls, reqs in zip(summary["expand_calls_per_batch"], summary["requests_per_batch"]):
        assert calls <= bound and reqs >= 4 * 3  # every row: >= 1 step (weights, thought, entropy) + decide
    # strong: the search's calls but the decision, + the self-reward scoring, per batch
    assert summary["strong_calls"] <= 2 * bound and summary["weak_calls"] == 2 * 2


def test_rerun_skips_and_another_config_is_refused(seam_run, split):
    out, summary, _ = seam_run
    files = {f: f.stat().st_mtime_ns for f in out.rglob("*")}
    logs = []
    assert _stage(split, out, logs) == summary
    assert logs == [f"seam seam_labels: complete, skipped ({ROWS} rows)"]
    assert {f: f.stat().st_mtime_ns for f in out.rglob("*")} == files
    with pytest.raises(RuntimeError, match="another SEAM/model/template config"):
        _stage(split, out, [], cfg=seam.SeamConfig(max_depth=3, thought_max_new_tokens=6))


def test_partial_run_resumes(seam_run, split, tmp_path):
    out, summary, _ = seam_run
    part = tmp_path / "seam_labels"
    shutil.copytree(out, part)
    (part / "_SUCCESS.json").unlink()
    (part / LABELS_FILE).unlink()
    shard = sorted((part / "_shards").glob("*.parquet"))[0]
    lost = pq.read_table(shard, columns=["id"]).column("id").to_pylist()
    shard.unlink()
    (part / "_shards" / "crashed.parquet").write_bytes(b"PAR1 cut off")  # a partial file from a crash
    logs = []
    resumed = _stage(split, part, logs)
    assert any("discarding partial file crashed.parquet" in m for m in logs)
    assert f"seam seam_labels: resuming, {ROWS - len(lost)} rows already written" in logs
    assert resumed["rows"] == ROWS and resumed["rows_new"] == len(lost)
    before = {r["id"]: r for r in read_seam_labels(out).to_pylist()}
    after = {r["id"]: r for r in read_seam_labels(part).to_pylist()}
    assert sorted(after) == sorted(before)
    for i in set(after) - set(lost):  # rows written before the crash are kept as they were
        assert after[i]["tree"] == before[i]["tree"] and after[i]["weak_probs"] == before[i]["weak_probs"]


def test_ablation_no_fftree_one_thought_and_no_filter(ray_cluster, split, tmp_path):
    cfg = seam.SeamConfig(max_depth=2, thought_max_new_tokens=6, ablation="no_fftree")
    summary = _stage(split, tmp_path / "seam_labels", [], cfg=cfg)
    rows = read_seam_labels(tmp_path / "seam_labels").to_pylist()
    assert all(r["kept"] for r in rows) and summary["kept"] == ROWS
    assert all(r["stop_reason"] == "no_fftree" and r["tree_depth"] == 1 for r in rows)
    assert all(json.loads(r["tree"])[1]["chain"] == [] for r in rows)
    # thought, entropy and decide: three calls per batch
    assert summary["expand_calls_per_batch"] == [3, 3]
    assert summary["table2"]["seam"]["accuracy"] == summary["table2"]["seam_no_filter"]["accuracy"]


# ---------------------------------------------------------------- batching, with fake actors

class _Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args, **kwargs):
        import ray

        return ray.put(self.fn(*args, **kwargs))


class FakeActor:
    """Deterministic probabilities from a hash of (text, option); counts calls."""

    def __init__(self):
        self.calls = 0
        self.score_options, self.generate = _Method(self._score), _Method(self._generate)

    def _score(self, texts, labels, chat, answer):
        self.calls += 1
        out = []
        for t, labs in zip(texts, labels):
            v = np.array([zlib.crc32((t + lab).encode()) % 997 + 1.0 for lab in labs])
            out.append(v / v.sum())
        return out

    def _generate(self, texts, n, max_new_tokens, temperature, seed, chat, stop=None):
        self.calls += 1
        assert stop == list(seam.SeamConfig().thought_stop)  # the search passes its stop strings
        return [[(f"thought {zlib.crc32(t.encode()) % 97}\n\nQuestion: more", 0.0)] for t in texts]


def test_batched_calls_are_o_depth_and_match_row_at_a_time(ray_cluster, split):
    rows = (read_split(split) * 4)[:24]
    rows = [dict(r, id=f"{k:03d}") for k, r in enumerate(rows)]
    cfg = seam.SeamConfig(max_depth=3)
    principles = seam.load_principles(cfg.principles_path)
    kw = {"cfg": cfg, "principles": principles, "template": TEMPLATE, "stage": STAGE}
    strong, weak = FakeActor(), FakeActor()
    batched = seam_batch(pa.Table.from_pylist(rows), actors={"strong": [strong], "weak": [weak]}, **kw).to_pylist()
    stats = json.loads(batched[0]["batch_stats"])
    assert stats["rows"] == 24 and stats["expand_calls"] <= 3 * 2 * cfg.max_depth + 1
    assert stats["requests"] >= 4 * 24 and stats["requests_by_kind"]["decide"] == 24
    assert strong.calls == stats["strong_calls"] and weak.calls == stats["weak_calls"] == 2
    s1, w1 = FakeActor(), FakeActor()
    single = [seam_batch(pa.Table.from_pylist([r]), actors={"strong": [s1], "weak": [w1]}, **kw).to_pylist()[0] for r in rows]
    # a row-at-a-time loop makes one call per request: the same trees, `requests` calls
    assert s1.calls + w1.calls - 2 * 24 == stats["requests"]  # minus the two baseline calls per row
    assert [r["tree"] for r in single] == [r["tree"] for r in batched]
    assert [r["weak_probs"] for r in single] == [r["weak_probs"] for r in batched]
