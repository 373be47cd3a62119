"""Option-choice data: schema, validation, loaders and the data stage (seeded splits).

One row: `id: str, prompt: str, options: list[str], label: int | None` (DESIGN.md data model).
Sources: `embedded:<name>` (see pipelines/datasets.py), a JSONL / JSON / Parquet file, or a
Hugging Face `datasets` directory (`save_to_disk`) or hub name. `data.fields` maps source
columns onto the schema. The stage writes `data/{weak_train,held_out,test}/part-*.parquet` in
shards of `shard_rows` rows (so Ray Data streams them) and is skipped when already complete.

    w2s data --config configs/quickstart.yaml
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SPLITS = ("weak_train", "held_out", "test")
SCHEMA = pa.schema([
    ("id", pa.string()),
    ("prompt", pa.string()),
    ("options", pa.list_(pa.string())),
    ("label", pa.int64()),
])


class DataError(ValueError):
    """A malformed row, an empty dataset or an unreadable source; the message names row and field."""


@dataclass
class DataConfig:
    source: str = "embedded:boolq"
    format: str = "auto"  # auto | jsonl | json | parquet | hf
    fields: dict[str, str] = field(default_factory=dict)  # schema field -> source column
    hf_split: str = "train"
    weak_train: int = 200
    held_out: int = 200
    test: int = 200
    seed: int = 0
    shard_rows: int = 64
    max_prompt_chars: int = 2000  # longer prompts are cut from the left (keeps the question)

    def __post_init__(self):
        if self.format not in ("auto", "jsonl", "json", "parquet", "hf"):
            raise ValueError(f"format: must be auto|jsonl|json|parquet|hf, got {self.format!r}")
        for name in ("weak_train", "held_out", "test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0")
        if self.held_out + self.weak_train + self.test == 0:
            raise ValueError("held_out: weak_train + held_out + test must be > 0")
        if self.shard_rows <= 0:
            raise ValueError("shard_rows: must be > 0")
        if self.max_prompt_chars < 16:
            raise ValueError("max_prompt_chars: must be >= 16")
        bad = set(self.fields) - {"id", "prompt", "options", "label"}
        if bad:
            raise ValueError(f"fields: unknown schema field {sorted(bad)[0]!r} (use id, prompt, options, label)")


def validate_row(row: dict, index: int, source: str = "data") -> dict:
    """Check one row against the schema; return it normalised (id as str, label int or None)."""
    where = f"{source}: row {index}"
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a mapping, got {type(row).__name__}")
    for name in ("id", "prompt", "options"):
        if row.get(name) is None:
            raise DataError(f"{where}: missing field {name!r}")
    rid = row["id"]
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or str(rid) == "":
        raise DataError(f"{where}: field 'id' must be a non-empty string or integer, got {rid!r}")
    where = f"{source}: row {index} (id={rid})"
    prompt = row["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{where}: field 'prompt' must be a non-empty string")
    options = row["options"]
    if isinstance(options, np.ndarray):
        options = options.tolist()
    if not isinstance(options, (list, tuple)) or len(options) == 0:
        raise DataError(f"{where}: field 'options' is empty or not a list")
    if len(options) < 2:
        raise DataError(f"{where}: field 'options' needs at least 2 options, got {len(options)}")
    for j, opt in enumerate(options):
        if not isinstance(opt, str) or not opt.strip():
            raise DataError(f"{where}: field 'options' item {j} must be a non-empty string")
    label = row.get("label")
    if isinstance(label, str):
        if label not in options:
            raise DataError(f"{where}: field 'label' {label!r} is not one of the options")
        label = list(options).index(label)
    elif label is not None and not (isinstance(label, (int, np.integer)) and not isinstance(label, bool)):
        raise DataError(f"{where}: field 'label' must be an integer option index or null, got {label!r}")
    if label is not None and not 0 <= int(label) < len(options):
        raise DataError(f"{where}: field 'label' {label} out of range for {len(options)} options")
    return {"id": str(rid), "prompt": prompt, "options": [str(o) for o in options],
            "label": None if label is None else int(label)}


def validate_rows(rows: list[dict], source: str = "data") -> list[dict]:
    if not rows:
        raise DataError(f"{source}: dataset is empty")
    out = [validate_row(r, i, source) for i, r in enumerate(rows)]
    seen: dict[str, int] = {}
    for i, r in enumerate(out):
        if r["id"] in seen:
            raise DataError(f"{source}: row {i}: field 'id' {r['id']!r} duplicates row {seen[r['id']]}")
        seen[r["id"]] = i
    return out


def _map_fields(rows: list[dict], fields: dict[str, str]) -> list[dict]:
    if not fields:
        return rows
    out = []
    for i, r in enumerate(rows):
        m = dict(r)
        for target, col in fields.items():
            m[target] = r.get(col)
        if "id" not in m:
            m["id"] = i
        out.append(m)
    return out


def read_source(cfg: DataConfig) -> list[dict]:
    """Read and validate every row of the configured source."""
    if cfg.source.startswith("embedded:"):
        from pipelines.datasets import load_embedded

        rows = load_embedded(cfg.source.split(":", 1)[1])
    else:
        rows = _map_fields(read_file(cfg.source, cfg.format, cfg.hf_split), cfg.fields)
        rows = [dict(r, id=r.get("id", i)) for i, r in enumerate(rows)]
    rows = validate_rows(rows, cfg.source)
    for r in rows:
        if len(r["prompt"]) > cfg.max_prompt_chars:
            r["prompt"] = "..." + r["prompt"][-(cfg.max_prompt_chars - 3):]
    return rows


def read_file(path: str, fmt: str = "auto", hf_split: str = "train") -> list[dict]:
    p = Path(path).expanduser()
    if fmt == "auto":
        fmt = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}.get(p.suffix, "hf")
    if fmt in ("jsonl", "json", "parquet") and not p.exists():
        raise DataError(f"data.source: file not found: {p}")
    if fmt == "jsonl":
        rows = []
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{p}: line {n} is not valid JSON ({e.msg})") from None
        return rows
    if fmt == "json":
        try:
            rows = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: not valid JSON ({e.msg})") from None
        if not isinstance(rows, list):
            raise DataError(f"{p}: a JSON source must hold a list of rows")
        return rows
    if fmt == "parquet":
        files = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
        return [r for f in files for r in pq.read_table(f).to_pylist()]
    return _read_hf(path, hf_split)


def _read_hf(path: str, split: str) -> list[dict]:
    import datasets

    p = Path(path).expanduser()
    try:
        if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(p))
        else:
            ds = datasets.load_dataset(path, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many types; surface one clear error
        raise DataError(f"data.source: could not load Hugging Face dataset {path!r}: {str(e).splitlines()[0][:300]}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"data.hf_split: split {split!r} not in {list(ds)}")
        ds = ds[split]
    return ds.to_list()


def split_rows(rows: list[dict], cfg: DataConfig) -> dict[str, list[dict]]:
    """Deterministic weak_train / held_out / test split by seed (disjoint)."""
    return seeded_split(rows, {name: getattr(cfg, name) for name in SPLITS}, cfg.seed, "data", cfg.source)


def seeded_split(rows: list[dict], sizes: dict[str, int], seed: int, where: str, source: str) -> dict[str, list[dict]]:
    """Disjoint splits of the given sizes, in order, from one seeded permutation of the rows."""
    need = sum(sizes.values())
    if need > len(rows):
        raise DataError(f"{where}: {' + '.join(sizes)} = {need} exceeds the {len(rows)} rows of {source}")
    order = np.random.default_rng(seed).permutation(len(rows))
    out, start = {}, 0
    for name, n in sizes.items():
        out[name] = [rows[i] for i in order[start:start + n]]
        start += n
    return out


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_split(rows: list[dict], directory: Path, shard_rows: int, schema: pa.Schema = SCHEMA) -> None:
    """Write rows as Parquet shards through a temp dir + rename, so a crash leaves no half split."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for k, start in enumerate(range(0, len(rows), shard_rows)):
        table = pa.Table.from_pylist(rows[start:start + shard_rows], schema=schema)
        pq.write_table(table, tmp / f"part-{k:05d}.parquet")
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def prepare_data(cfg: DataConfig, out_dir: Path, log=print) -> dict:
    """The data stage: config in, split directories out; skipped when complete with the same config."""
    out_dir = Path(out_dir)
    marker = out_dir / "_SUCCESS.json"
    fp = fingerprint(asdict(cfg))
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done["fingerprint"] != fp:
            raise DataError(
                f"{out_dir} holds splits made with another data config ({done['config']}); "
                "use a new run_dir, or delete that folder to rebuild"
            )
        log(f"data: complete, skipped ({done['counts']})")
        return done
    rows = read_source(cfg)
    splits = split_rows(rows, cfg)
    for name, split in splits.items():
        write_split(split, out_dir / name, cfg.shard_rows)
    done = {"fingerprint": fp, "config": asdict(cfg), "counts": {k: len(v) for k, v in splits.items()}}
    marker.write_text(json.dumps(done, indent=1))
    log(f"data: {cfg.source} -> {done['counts']} rows in {out_dir}")
    return done


def read_split(directory: Path) -> list[dict]:
    files = sorted(Path(directory).glob("*.parquet"))
    if not files:
        raise DataError(f"split {directory} is missing or empty: run the data stage first")
    return [r for f in files for r in pq.read_table(f).to_pylist()]
