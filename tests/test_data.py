"""Data: row validation, loaders (JSONL, Parquet, HF datasets), embedded sets, seeded splits."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.data import (DataConfig, DataError, prepare_data, read_file, read_source, read_split, split_rows,
                            validate_rows)

GOOD = {"id": "a", "prompt": "Is water wet?", "options": ["No", "Yes"], "label": 1}


@pytest.mark.parametrize("row,message", [
    ({"prompt": "p", "options": ["a", "b"]}, "row 0: missing field 'id'"),
    ({"id": 1, "options": ["a", "b"]}, "row 0: missing field 'prompt'"),
    ({"id": 1, "prompt": "p"}, "row 0: missing field 'options'"),
    ({"id": 1, "prompt": "p", "options": []}, r"row 0 \(id=1\): field 'options' is empty"),
    ({"id": 1, "prompt": "p", "options": ["only"]}, "needs at least 2 options"),
    ({"id": 1, "prompt": "p", "options": ["a", ""]}, "field 'options' item 1 must be a non-empty string"),
    ({"id": 1, "prompt": "  ", "options": ["a", "b"]}, "field 'prompt' must be a non-empty string"),
    ({"id": 1, "prompt": "p", "options": ["a", "b"], "label": 2}, "field 'label' 2 out of range for 2 options"),
    ({"id": 1, "prompt": "p", "options": ["a", "b"], "label": -1}, "field 'label' -1 out of range"),
    ({"id": 1, "prompt": "p", "options": ["a", "b"], "label": 1.5}, "field 'label' must be an integer"),
    ({"id": 1, "prompt": "p", "options": ["a", "b"], "label": "c"}, "field 'label' 'c' is not one of the options"),
    ({"id": True, "prompt": "p", "options": ["a", "b"]}, "field 'id' must be"),
])
def test_validation_errors_name_row_and_field(row, message):
    with pytest.raises(DataError, match=message):
        validate_rows([row], "src")


def test_validation_normalises_and_rejects_duplicates():
    rows = validate_rows([dict(GOOD, id=7, label="Yes"), dict(GOOD, id="b", label=None)])
    assert rows[0] == {"id": "7", "prompt": "Is water wet?", "options": ["No", "Yes"], "label": 1}
    assert rows[1]["label"] is None
    with pytest.raises(DataError, match="row 1: field 'id' 'a' duplicates row 0"):
        validate_rows([GOOD, GOOD])
    with pytest.raises(DataError, match="dataset is empty"):
        validate_rows([], "src")


def test_jsonl_parquet_hf_loaders_agree(tmp_path):
    raw = [{"qid": i, "question": f"q{i}", "choices": ["x", "y", "z"], "answer": i % 3} for i in range(5)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in raw) + "\n")
    pq.write_table(pa.Table.from_pylist(raw), tmp_path / "d.parquet")
    import datasets

    datasets.Dataset.from_list(raw).save_to_disk(str(tmp_path / "hf"))
    fields = {"id": "qid", "prompt": "question", "options": "choices", "label": "answer"}
    loaded = [read_source(DataConfig(source=str(tmp_path / name), fields=fields, weak_train=1, held_out=1, test=1))
              for name in ("d.jsonl", "d.parquet", "hf")]
    assert loaded[0] == loaded[1] == loaded[2]
    assert loaded[0][4] == {"id": "4", "prompt": "q4", "options": ["x", "y", "z"], "label": 1}


def test_loader_errors(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n{not json\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        read_file(str(tmp_path / "bad.jsonl"))
    with pytest.raises(DataError, match="file not found"):
        read_file(str(tmp_path / "missing.parquet"))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="dataset is empty"):
        read_source(DataConfig(source=str(tmp_path / "empty.jsonl")))
    with pytest.raises(DataError, match="could not load Hugging Face dataset"):
        read_file("no-such-org/no-such-dataset", "hf")
    with pytest.raises(ValueError, match="unknown embedded dataset 'nope'"):
        read_source(DataConfig(source="embedded:nope"))


@pytest.mark.parametrize("name,k,n", [("boolq", 2, 12697), ("mmlu", 4, 2849), ("piqa_pairs", 2, 1500), ("piqa", 2, 1500)])
def test_embedded_datasets(name, k, n):
    rows = read_source(DataConfig(source=f"embedded:{name}"))
    assert len(rows) == n and {len(r["options"]) for r in rows} == {k}
    assert all(r["label"] is not None for r in rows)


def test_piqa_prompt_is_the_goal_alone():
    """piqa and piqa_pairs hold the same rows; piqa's prompt leaves out the classification question,
    so a policy given it writes a solution (issue 12, item 7)."""
    pairs = read_source(DataConfig(source="embedded:piqa_pairs"))
    goals = read_source(DataConfig(source="embedded:piqa"))
    assert [(r["options"], r["label"]) for r in goals] == [(r["options"], r["label"]) for r in pairs]
    assert pairs[0]["prompt"] == goals[0]["prompt"] + "\nWhich solution is better?"
    assert goals[0]["prompt"].startswith("Goal: ") and "\n" not in goals[0]["prompt"]


def test_boolq_row_is_hand_checked():
    rows = {r["id"]: r for r in read_source(DataConfig(source="embedded:boolq"))}
    r = rows["boolq-0"]  # first line of BoolQ/combined.jsonl: "do you have to be an all-star ..." -> False
    assert r["prompt"].endswith("Question: Do you have to be an all-star to be in the home run derby?")
    assert r["options"] == ["No", "Yes"] and r["label"] == 0


def test_splits_are_seeded_and_disjoint():
    cfg = DataConfig(source="embedded:piqa_pairs", weak_train=30, held_out=20, test=10, seed=3)
    rows = read_source(cfg)
    a, b = split_rows(rows, cfg), split_rows(rows, cfg)
    assert a == b
    ids = [set(r["id"] for r in a[s]) for s in ("weak_train", "held_out", "test")]
    assert [len(x) for x in ids] == [30, 20, 10] and not (ids[0] & ids[1] or ids[1] & ids[2] or ids[0] & ids[2])
    other = split_rows(rows, DataConfig(source="embedded:piqa_pairs", weak_train=30, held_out=20, test=10, seed=4))
    assert other["held_out"] != a["held_out"]
    with pytest.raises(DataError, match="exceeds the 1500 rows"):
        split_rows(rows, DataConfig(source="embedded:piqa_pairs", weak_train=1500, held_out=1, test=0))


def test_data_stage_is_idempotent_and_guards_its_output(tmp_path):
    cfg = DataConfig(source="embedded:mmlu", weak_train=10, held_out=9, test=5, shard_rows=4)
    logs = []
    done = prepare_data(cfg, tmp_path, logs.append)
    assert done["counts"] == {"weak_train": 10, "held_out": 9, "test": 5}
    assert len(list((tmp_path / "held_out").glob("*.parquet"))) == 3  # 4 + 4 + 1 rows
    held = read_split(tmp_path / "held_out")
    prepare_data(cfg, tmp_path, logs.append)
    assert "skipped" in logs[-1] and read_split(tmp_path / "held_out") == held
    with pytest.raises(DataError, match="another data config"):
        prepare_data(DataConfig(source="embedded:mmlu", weak_train=10, held_out=9, test=5, seed=1), tmp_path)
    assert read_split(tmp_path / "held_out") == held  # nothing already written was touched
