"""The one streaming-stage runner: every stage that streams a split through model actors uses it.

A stage is its config (what determines its output), its actors (roles), its batch function and
its finalize. The runner owns the rest, once:

  guard       skip when complete (same fingerprint), refuse another config, resume: rows whose
              ids a partial run already wrote are dropped from the input (partial files removed)
  placement   one placement plan for every role, then one WorkerGroup per role
  streaming   Ray Data over the split's shards -> map_batches(batch function, actors) -> Parquet
  finalize    every input row exactly once (checked), the stage's own summary on top
  manifest    _SUCCESS.json: kind (which stage / method made it), fingerprint, rows, rows_new,
              seconds, rows_per_s, tokens (of the rows, summed over the `tokens` column), and
              the stage's summary
  progress    a start line (roles, plan), an actors-ready line, a line with rows written, rate
              and time left every `progress_every_s` while rows arrive (Ray Data's own progress
              counts blocks, and a split of few shards reads 0/1 for the whole stage), and the
              closing summary line
  recovery    a lost node or a dead actor (after the actors' own restarts and call retries) ends
              the attempt; the runner places the actors again on the nodes alive and resumes
              from the rows written, up to cluster.stage_restarts times; when they cannot be
              placed (no capacity left) it stops with StageInterrupted, and a rerun resumes

Weak annotation, SEAM, joint decoding, DPO pair generation and the test-split scoring of
evaluation are `StreamStage`s run by `run_stage`.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.data import fingerprint
from training.launcher import JobConflict

# Ray Data tasks mostly wait on the actors; they must fit beside the actors' bundles
TASK_CPUS = 0.1
MANIFEST = "_SUCCESS.json"


class StageConflict(JobConflict):
    """A stage folder holds output made with another config: nothing is overwritten."""


class StageInterrupted(RuntimeError):
    """A stage lost cluster capacity more often than cluster.stage_restarts allows, or its actors
    cannot be placed on the nodes left: what is written stays, a rerun resumes."""


@dataclass
class Role:
    """One WorkerGroup of a stage: `name` is the plan's role (weak | strong | policy | reward)."""
    name: str
    actor_cls: type
    kwargs: list[dict]
    names: list[str] | None = None


@dataclass
class StreamStage:
    kind: str  # what made the output, in the manifest: "weak_labels/reliability", "seam", "joint", ...
    split_dir: Path
    out_dir: Path
    config: dict  # what determines the output (fingerprinted with the input's file names)
    what: str  # names that config in a refusal
    roles: list[Role]
    batch_fn: Callable  # (batch: pa.Table, *, actors: dict[role, list], **batch_kwargs) -> pa.Table
    finalize: Callable  # (table of every row, run: dict) -> the stage's summary
    batch_rows: int = 16
    max_in_flight: int = 4
    batch_kwargs: dict = field(default_factory=dict)
    schema: pa.Schema | None = None
    shards: str = "_shards"  # where the batches are written, under out_dir ("" = out_dir itself)
    label: str = ""  # log prefix (default: kind)
    describe: str = ""  # the start line's text
    # run[name] = the delta over this session of the sum of role's actors' method(): {name: (role, method)}
    counters: dict[str, tuple[str, str]] = field(default_factory=dict)
    progress_every_s: float = 30.0  # a progress line at most this often, only when rows were written

    @property
    def shards_dir(self) -> Path:
        return self.out_dir / self.shards if self.shards else self.out_dir


def run_stage(stage: StreamStage, cluster_cfg, log=print) -> dict:
    """Run (or skip, or resume) one streaming stage; returns its manifest."""
    from cluster.connect import connect
    from cluster.errors import PlacementTimeoutError
    from cluster.plan import plan_resources

    label = stage.label or stage.kind
    split_dir, out_dir = Path(stage.split_dir), Path(stage.out_dir)
    fp = fingerprint({**stage.config, "input": sorted(p.name for p in split_dir.glob("*.parquet"))})
    summary, done = open_stage(out_dir, fp, stage.what, log, stage.shards_dir)
    if summary:
        log(f"{label}: complete, skipped ({summary['rows']} rows)")
        return summary
    plan = plan_resources({r.name: len(r.kwargs) for r in stage.roles}, cluster_cfg, cluster_cpus(cluster_cfg))
    connect(cluster_cfg, plan.total_gpus)
    log(f"{label}: {stage.describe}; {plan.describe()}" if stage.describe else f"{label}: {plan.describe()}")
    resumed, seconds, counted = len(done), 0.0, dict.fromkeys(stage.counters, 0)
    for attempt in range(cluster_cfg.stage_restarts + 1):
        t1 = time.time()
        try:
            deltas, streamed = _stream(stage, plan, cluster_cfg, done, log, label)
        except Exception as e:  # noqa: BLE001 - sorted below: lost capacity is retried, the rest raised
            seconds += time.time() - t1
            cause = lost_capacity(e)
            if cause is None:
                raise
            done = collect_done(stage.shards_dir, log)
            if attempt == cluster_cfg.stage_restarts or isinstance(e, PlacementTimeoutError):
                raise StageInterrupted(
                    f"{label}: stopped after losing cluster capacity ({cause}); {len(done)} rows are written "
                    f"under {stage.shards_dir}: run the same command again to resume") from e
            log(f"{label}: interrupted ({cause}); {len(done)} rows written, placing the actors again on the "
                f"nodes alive (restart {attempt + 1} of {cluster_cfg.stage_restarts})")
            continue
        seconds += streamed
        counted = {c: counted[c] + deltas[c] for c in counted}
        break
    table = read_complete(stage.shards_dir, split_dir, stage.schema)
    rows_new = table.num_rows - resumed
    run = {"seconds": seconds, "rows_new": rows_new, "resumed": resumed, **counted}
    summary = {"kind": stage.kind, "stage": out_dir.name, "fingerprint": fp, "rows": table.num_rows,
               "rows_new": rows_new, "seconds": round(seconds, 2),
               "rows_per_s": round(rows_new / max(seconds, 1e-9), 4),
               "tokens": int(sum(table["tokens"].to_pylist())) if "tokens" in table.column_names else None}
    summary.update(stage.finalize(table, run))
    (out_dir / MANIFEST).write_text(json.dumps(summary, indent=1))
    log(f"{label}: {summary['rows']} rows ({rows_new} new) in {seconds:.1f} s ({summary['rows_per_s']:.3f} rows/s"
        + (f", {summary['tokens']} tokens" if summary["tokens"] is not None else "") + ")"
        + (f"; {summary['line']}" if summary.get("line") else ""))
    return summary


def _stream(stage: StreamStage, plan, cluster_cfg, done: set[str], log, label: str) -> tuple[dict[str, int], float]:
    """One attempt: a WorkerGroup per role, the pending rows through the batch function, Parquet
    shards; returns the counters' deltas over this attempt and its streaming seconds (after the
    actors are ready)."""
    import ray

    from cluster.worker_group import WorkerGroup

    t0 = time.time()
    with contextlib.ExitStack() as stack:
        groups = {r.name: stack.enter_context(WorkerGroup(r.actor_cls, plan.roles[r.name], cluster_cfg, r.kwargs, r.names))
                  for r in stage.roles}
        log(f"{label}: actors ready in {time.time() - t0:.1f} s on GPUs "
            f"{ {n: [i['gpu_ids'] for i in g.infos] for n, g in groups.items()} }"
            + f" over {len({i.get('node_id') for g in groups.values() for i in g.infos})} node(s)")
        before = _counters(groups, stage.counters)
        t1 = time.time()
        ds = pending_rows(stage.split_dir, done, log, label)
        ds = ds.map_batches(stage.batch_fn, batch_size=stage.batch_rows, batch_format="pyarrow", num_cpus=TASK_CPUS,
                            compute=ray.data.TaskPoolStrategy(size=stage.max_in_flight),
                            fn_kwargs={"actors": {n: g.actors for n, g in groups.items()}, **stage.batch_kwargs})
        pending = rows_in(stage.split_dir) - len(done)
        with progress(label, stage.shards_dir, pending, log, stage.progress_every_s):
            ds.write_parquet(str(stage.shards_dir), ray_remote_args={"num_cpus": TASK_CPUS})
        streamed = time.time() - t1
        after = _counters(groups, stage.counters)
    return {c: after[c] - before[c] for c in stage.counters}, streamed


def rows_in(folder: Path) -> int:
    """Rows of the complete Parquet files in `folder`, from their footers (a file still being
    written has none yet and is not counted)."""
    n = 0
    for f in Path(folder).glob("*.parquet"):
        with contextlib.suppress(Exception):
            n += pq.ParquetFile(f).metadata.num_rows
    return n


def progress_line(label: str, written: int, total: int, seconds: float) -> str:
    rate = written / seconds if seconds > 0 else 0.0
    left = f", about {(total - written) / rate:.0f} s left" if rate > 0 and written < total else ""
    return f"{label}: {written}/{total} rows in {seconds:.0f} s ({rate:.3f} rows/s{left})"


@contextlib.contextmanager
def progress(label: str, shards_dir: Path, total: int, log, every_s: float):
    """While the body runs, log the rows newly written under `shards_dir` (of `total` pending)
    every `every_s` seconds in which some arrived."""
    stop, t0, start = threading.Event(), time.time(), rows_in(shards_dir)

    def watch():
        last = start
        while not stop.wait(every_s):
            n = rows_in(shards_dir)
            if n != last:
                log(progress_line(label, n - start, total, time.time() - t0))
                last = n

    thread = threading.Thread(target=watch, name=f"{label}-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# what a lost node or a dead actor raises, at any depth of the chain Ray Data wraps it in
_CAPACITY_ERRORS = ("ActorDiedError", "ActorUnavailableError", "RayActorError", "NodeDiedError",
                    "ObjectLostError", "OwnerDiedError", "WorkerCrashedError", "ActorUnschedulableError",
                    "PlacementTimeoutError")


def lost_capacity(e: BaseException) -> str | None:
    """The name of the cluster failure behind `e` (a lost node, a dead or unplaceable actor), or
    None for any other error (a bug or bad input: raised as it is, never retried)."""
    seen, todo = set(), [e]
    while todo:
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        for cls in type(x).__mro__:
            if cls.__name__ in _CAPACITY_ERRORS:
                return cls.__name__
        # `raise ... from None` hides the context: a WorkerStartError for a model that cannot
        # load carries the RayActorError of its creation task there, and is not lost capacity
        links = (x.__cause__, None if x.__suppress_context__ else x.__context__, getattr(x, "cause", None))
        todo += [c for c in links if isinstance(c, BaseException)]  # WorkerStartError.cause may be text
    text = str(e)
    return next((n for n in _CAPACITY_ERRORS if n in text), None)


def _counters(groups: dict, counters: dict[str, tuple[str, str]]) -> dict[str, int]:
    import ray

    return {c: sum(ray.get([getattr(a, method).remote() for a in groups[role].actors]))
            for c, (role, method) in counters.items()}


def batch_tokens_column(n_rows: int, tokens: int) -> pa.Array:
    """A batch's token count as a column: all of it on the batch's first row, so the column sums
    to the tokens of exactly the rows written, whatever a restart or a resume re-ran."""
    return pa.array([tokens] + [0] * (n_rows - 1) if n_rows else [], pa.int64())


# ---------------------------------------------------------------- the guard and the stream

def collect_done(out_dir: Path, log=print) -> set[str]:
    """Ids already written by complete Parquet files; unreadable (partial) files are removed."""
    done: set[str] = set()
    for f in sorted(Path(out_dir).glob("*.parquet")):
        try:
            ids = pq.read_table(f, columns=["id"]).column("id").to_pylist()
        except Exception:  # noqa: BLE001 - a file cut off by a crash has no valid footer
            log(f"resume: discarding partial file {f.name}")
            f.unlink()
            continue
        dup = done.intersection(ids)
        if dup:
            raise RuntimeError(f"{out_dir}: rows {sorted(dup)[:3]} written twice; the folder was modified by hand")
        done.update(ids)
    return done


def open_stage(out_dir: Path, fp: str, what: str, log=print, shards: Path | None = None) -> tuple[dict | None, set[str]]:
    """The guard of a stage: (the manifest of a complete run, or None; ids already written in
    `shards`, default out_dir). A complete or partial run made with another fingerprint (`what`
    names its config) is refused, so nothing already written is overwritten."""
    out_dir = Path(out_dir)
    marker, record = out_dir / MANIFEST, out_dir / "_CONFIG.json"
    if marker.is_file():
        summary = json.loads(marker.read_text())
        if summary["fingerprint"] != fp:
            raise StageConflict(f"{out_dir} was made with another {what} config; use a new run_dir or delete it")
        return summary, set()
    shards = Path(shards or out_dir)
    shards.mkdir(parents=True, exist_ok=True)
    if record.is_file() and json.loads(record.read_text())["fingerprint"] != fp:
        raise StageConflict(f"{out_dir} holds a partial run with another config; use a new run_dir or delete it")
    record.write_text(json.dumps({"fingerprint": fp}))
    return None, collect_done(shards, log)


def _read_shard_files(batch: pa.Table) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in batch["path"].to_pylist()])


def read_shards(split_dir: Path):
    """A Dataset streaming one block per shard file, so scoring starts while later shards are read.

    Not `read_parquet`: in Ray 2.60 its ListFiles step asks for a whole CPU, which cannot be
    scheduled beside the actors' bundles on a 2-core machine (the run deadlocks).
    """
    import ray

    files = sorted(str(f) for f in Path(split_dir).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{split_dir} holds no Parquet shards: run the data stage first")
    items = ray.data.from_items([{"path": f} for f in files], override_num_blocks=len(files))
    return items.map_batches(_read_shard_files, batch_size=1, batch_format="pyarrow", num_cpus=TASK_CPUS)


def drop_done(batch: pa.Table, *, done: set[str]) -> pa.Table:
    import pyarrow.compute as pc

    return batch.filter(pc.invert(pc.is_in(batch["id"], value_set=pa.array(sorted(done), pa.string()))))


def pending_rows(split_dir: Path, done: set[str], log, label: str):
    """The split as a Ray Data stream, without the rows a partial run already wrote."""
    ds = read_shards(split_dir)
    if done:
        log(f"{label}: resuming, {len(done)} rows already written")
        ds = ds.map_batches(drop_done, fn_kwargs={"done": done}, batch_format="pyarrow", num_cpus=TASK_CPUS)
    return ds


def read_complete(written_dir: Path, split_dir: Path, schema=None) -> pa.Table:
    """Every Parquet file a stage wrote, sorted by id; refuses output that misses or repeats an
    input row, so a stage is only marked complete when it is."""
    table = pa.concat_tables([pq.read_table(f, schema=schema) for f in sorted(Path(written_dir).glob("*.parquet"))])
    want = set(pq.read_table(split_dir, columns=["id"]).column("id").to_pylist())
    got = table["id"].to_pylist()
    if len(got) != len(set(got)) or set(got) != want:
        raise RuntimeError(f"{written_dir}: {len(got)} rows written for {len(want)} inputs "
                           f"({len(want - set(got))} missing, {len(got) - len(set(got))} duplicated)")
    return table.sort_by("id")


def read_manifest(out_dir: Path, kind: str, hint: str) -> dict:
    """The manifest of a complete stage folder whose kind starts with `kind`; a missing or other
    stage's folder is an error naming what to run."""
    marker = Path(out_dir) / MANIFEST
    if not marker.is_file():
        raise FileNotFoundError(f"{out_dir} is not a complete {kind.rstrip('/')} folder: {hint}")
    manifest = json.loads(marker.read_text())
    if not str(manifest.get("kind", "")).startswith(kind):
        raise ValueError(f"{out_dir} holds {manifest.get('kind')!r} output, not {kind.rstrip('/')}")
    return manifest


def write_atomic(table: pa.Table, path: Path) -> Path:
    """One Parquet file written through a temp name, so a crash never leaves half a file."""
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    pq.write_table(table, tmp)
    tmp.rename(path)
    return Path(path)


def cluster_cpus(cluster_cfg) -> float:
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("CPU", 1.0)
    return float(cluster_cfg.num_cpus or os.cpu_count() or 1)
