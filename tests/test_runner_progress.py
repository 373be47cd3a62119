"""The streaming runner's progress lines: rows counted from the shards' footers, rate and time left."""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.runner import progress, progress_line, rows_in


def test_progress_line_by_hand():
    # 40 of 160 rows in 20 s: 2 rows/s, 120 rows left -> 60 s
    assert progress_line("dpo_pairs", 40, 160, 20.0) == "dpo_pairs: 40/160 rows in 20 s (2.000 rows/s, about 60 s left)"
    assert progress_line("x", 160, 160, 80.0) == "x: 160/160 rows in 80 s (2.000 rows/s)"  # done: no time left


def test_rows_in_skips_a_file_still_being_written(tmp_path):
    pq.write_table(pa.table({"id": ["a", "b", "c"]}), tmp_path / "0.parquet")
    (tmp_path / "1.parquet").write_bytes(b"PAR1 no footer yet")
    assert rows_in(tmp_path) == 3


def test_progress_logs_only_rows_written_during_the_body(tmp_path):
    pq.write_table(pa.table({"id": ["old"]}), tmp_path / "resumed.parquet")  # a partial run's row
    lines = []
    with progress("stage", tmp_path, 4, lines.append, every_s=0.05):
        time.sleep(0.2)  # nothing new: no line
        assert lines == []
        pq.write_table(pa.table({"id": ["a", "b"]}), tmp_path / "new.parquet")
        deadline = time.time() + 5
        while not lines and time.time() < deadline:
            time.sleep(0.05)
    assert len(lines) == 1 and lines[0].startswith("stage: 2/4 rows in ")
