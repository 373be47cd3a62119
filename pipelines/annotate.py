"""Weak annotation: stream held-out rows through the weak ensemble with Ray Data, write weak labels.

Methods (`annotate.method`):
  naive        one weak model; its argmax is the label.
  ensemble     N weak models, weighted soft vote sum_i w_i p_i (seed 003 Eq. 2 weights);
               every model's probabilities are kept as `probs_<name>` columns.
  reliability  each row asked with its options in several orders (seed 001 section 4.1);
               empirical answer distribution (Eq. 2), entropy (Eq. 3), reliability per
               answer (Eq. 4, T = annotate.temperature), and the uncertainty filter: rows with
               entropy <= the 50th percentile are kept (`kept` is derived on read, see
               `read_weak_labels`; ties broken per annotate.tie_break). With several weak models the answers of every
               (model, order) pair form one answer multiset.
  seam         SEAM (seed 000): the strong model searches principle FF-trees, the one aligned weak
               model decides (pipelines/seam_annotate.py, run by `w2s run`); the baselines'
               labels come with it (training.examples.SEAM_SOURCES picks one per W2S method).

Weak actors live in a WorkerGroup (one GPU bundle each); Ray Data map tasks fan each batch out
to all of them. Output: Parquet files in <run_dir>/weak_labels/, written as batches finish. A
re-run skips rows already written (partial files from a crash are discarded), so an interrupted
run resumes with no duplicate or missing rows.

    w2s annotate --config configs/quickstart.yaml annotate.method=reliability
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import reliability as rel
from pipelines.data import fingerprint
from pipelines.prompts import TemplateConfig, render

METHODS = ("naive", "ensemble", "reliability", "seam")
TASK_CPUS = 0.1  # Ray Data tasks mostly wait on the weak actors; they must fit beside the bundles


@dataclass
class AnnotateConfig:
    method: str = "ensemble"
    num_permutations: int = 0  # reliability: option orders per row; 0 = all K!
    temperature: float = 0.2  # Eq. 4 T
    filter_percentile: float = 50.0  # uncertainty filter tau (section 4.2)
    # soft: ties in S_ent at tau broken by the soft vote's entropy, so exactly filter_percentile%
    # of rows are kept; none: the paper's literal S_ent <= tau (pipelines/reliability.py)
    tie_break: str = "soft"
    batch_rows: int = 16  # rows per Ray Data batch = one call on every weak actor
    max_in_flight: int = 4  # batches scored concurrently (keeps every weak actor busy)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"annotate.method: must be one of {METHODS}, got {self.method!r}")
        if self.num_permutations < 0:
            raise ValueError("annotate.num_permutations: must be >= 0 (0 = all orders)")
        if self.temperature <= 0:
            raise ValueError("annotate.temperature: must be > 0")
        if not 0 < self.filter_percentile <= 100:
            raise ValueError("annotate.filter_percentile: must be in (0, 100]")
        if self.tie_break not in ("soft", "none"):
            raise ValueError(f"annotate.tie_break: must be soft or none, got {self.tie_break!r}")
        if self.batch_rows < 1 or self.max_in_flight < 1:
            raise ValueError("annotate.batch_rows / max_in_flight: must be >= 1")


def output_schema(names: list[str]) -> pa.Schema:
    floats, ints = pa.list_(pa.float64()), pa.list_(pa.int64())
    return pa.schema(
        [("id", pa.string()), ("prompt", pa.string()), ("options", pa.list_(pa.string())), ("label", pa.int64())]
        + [(f"probs_{n}", floats) for n in names]
        + [("weak_probs", floats), ("weak_label", pa.int64()), ("weak_conf", pa.float64()),
           ("perms", pa.list_(ints)), ("answers", ints), ("emp_probs", floats), ("entropy", pa.float64()),
           ("soft_entropy", pa.float64()),
           ("reliability", floats)]
    )


def combine_row(per_model: list[list[np.ndarray]], perms: list[tuple[int, ...]], weights: list[float],
                method: str, temperature: float) -> dict:
    """Labels for one row from each model's per-order probabilities (indexed by shown position)."""
    k = len(perms[0])
    probs, answers = [], []
    for model_scores in per_model:
        mapped = np.zeros((len(perms), k))
        for j, (perm, q) in enumerate(zip(perms, model_scores)):
            mapped[j, list(perm)] = q  # shown position p held option perm[p]
            answers.append(int(perm[int(np.argmax(q))]))
        probs.append(mapped.mean(0))
    soft = np.sum([w * p for w, p in zip(weights, probs)], axis=0)
    emp = rel.empirical_distribution(answers, k)
    if method == "reliability":
        top = np.flatnonzero(emp == emp.max())
        label = int(top[np.argmax(soft[top])])  # ties in Eq. 2 broken by the soft vote
        conf = float(emp[label])
    else:
        label, conf = int(np.argmax(soft)), float(soft.max())
    return {"probs": probs, "weak_probs": soft.tolist(), "weak_label": label, "weak_conf": conf,
            "perms": [list(p) for p in perms], "answers": answers, "emp_probs": emp.tolist(),
            "entropy": rel.answer_entropy(emp), "soft_entropy": rel.answer_entropy(soft), "reliability": rel.reliability_scores(answers, temperature).tolist()}


def score_batch(batch: pa.Table, *, actors: list, names: list[str], weights: list[float], method: str,
                num_permutations: int, temperature: float, template: TemplateConfig) -> pa.Table:
    """Ray Data map function: render every (row, option order), score on all weak actors, combine."""
    import ray

    rows = batch.to_pylist()
    texts, labels, row_perms = [], [], []
    for r in rows:
        k = len(r["options"])
        perms = (rel.option_permutations(k, num_permutations, r["id"]) if method == "reliability"
                 else [tuple(range(k))])
        row_perms.append(perms)
        for perm in perms:
            text, labs = render(r["prompt"], r["options"], perm, template)
            texts.append(text)
            labels.append(labs)
    results = ray.get([a.score_options.remote(texts, labels, template.chat, template.answer) for a in actors])
    out, pos = [], 0
    for r, perms in zip(rows, row_perms):
        per_model = [res[pos:pos + len(perms)] for res in results]
        pos += len(perms)
        c = combine_row(per_model, perms, weights, method, temperature)
        row = {"id": r["id"], "prompt": r["prompt"], "options": r["options"], "label": r["label"]}
        row.update({f"probs_{n}": p.tolist() for n, p in zip(names, c.pop("probs"))})
        row.update(c)
        out.append(row)
    return pa.Table.from_pylist(out, schema=output_schema(names))


def _read_shard_files(batch: pa.Table) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in batch["path"].to_pylist()])


def read_shards(split_dir: Path):
    """A Dataset streaming one block per shard file, so scoring starts while later shards are read.

    Not `read_parquet`: in Ray 2.60 its ListFiles step asks for a whole CPU, which cannot be
    scheduled beside the weak actors' bundles on a 2-core machine (the run deadlocks).
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


def collect_done(out_dir: Path, log=print) -> set[str]:
    """Ids already written by complete Parquet files; unreadable (partial) files are removed."""
    done: set[str] = set()
    for f in sorted(out_dir.glob("*.parquet")):
        try:
            ids = pq.read_table(f, columns=["id"]).column("id").to_pylist()
        except Exception:  # noqa: BLE001 - a file cut off by a crash has no valid footer
            log(f"annotate: discarding partial file {f.name}")
            f.unlink()
            continue
        dup = done.intersection(ids)
        if dup:
            raise RuntimeError(f"{out_dir}: rows {sorted(dup)[:3]} written twice; the folder was modified by hand")
        done.update(ids)
    return done


def kept_mask(table: pa.Table, percentile: float, tie_break: str) -> np.ndarray:
    """The uncertainty filter over a whole weak_labels table (rows sorted by id)."""
    soft = table["soft_entropy"].to_pylist() if tie_break == "soft" else None
    return rel.uncertainty_filter(table["entropy"].to_pylist(), percentile, soft)


def read_weak_labels(out_dir: Path) -> pa.Table:
    """All weak labels, sorted by id, with the `kept` column of the uncertainty filter."""
    out_dir = Path(out_dir)
    marker = out_dir / "_SUCCESS.json"
    if not marker.is_file():
        raise FileNotFoundError(f"{out_dir} is not a complete weak_labels folder: run `w2s annotate` first")
    done = json.loads(marker.read_text())
    if done.get("method") == "seam":
        from pipelines.seam_annotate import as_weak_labels

        return as_weak_labels(out_dir, done)
    table = pa.concat_tables([pq.read_table(f) for f in sorted(out_dir.glob("*.parquet"))]).sort_by("id")
    return table.append_column("kept", pa.array(kept_mask(table, done["filter_percentile"], done["tie_break"])))


def summarize(table: pa.Table, names: list[str], kept: np.ndarray) -> dict:
    labels = table["label"].to_pylist()
    has = np.array([lb is not None for lb in labels])
    y = np.array([lb if lb is not None else -1 for lb in labels])
    weak = np.array(table["weak_label"].to_pylist())

    def acc(mask):
        m = mask & has
        return float((weak[m] == y[m]).mean()) if m.any() else None

    per_model = {}
    for n in names:
        pred = np.array([int(np.argmax(p)) for p in table[f"probs_{n}"].to_pylist()])
        per_model[n] = float((pred[has] == y[has]).mean()) if has.any() else None
    return {"rows": table.num_rows, "labelled": int(has.sum()), "kept": int(kept.sum()),
            "accuracy": acc(np.ones_like(kept)), "accuracy_kept": acc(kept), "accuracy_filtered": acc(~kept),
            "accuracy_per_model": per_model}


def open_stage(out_dir: Path, fp: str, what: str, log=print, shards: Path | None = None) -> tuple[dict | None, set[str]]:
    """The guard of a streaming stage: (the summary of a complete run, or None; ids already written
    in `shards`, default out_dir). A complete or partial run made with another fingerprint
    (`what` names its config) is refused, so nothing already written is overwritten."""
    marker, record = out_dir / "_SUCCESS.json", out_dir / "_CONFIG.json"
    if marker.is_file():
        summary = json.loads(marker.read_text())
        if summary["fingerprint"] != fp:
            raise RuntimeError(f"{out_dir} was made with another {what} config; use a new run_dir or delete it")
        return summary, set()
    shards = shards or out_dir
    shards.mkdir(parents=True, exist_ok=True)
    if record.is_file() and json.loads(record.read_text())["fingerprint"] != fp:
        raise RuntimeError(f"{out_dir} holds a partial run with another config; use a new run_dir or delete it")
    record.write_text(json.dumps({"fingerprint": fp}))
    return None, collect_done(shards, log)


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


def annotate_stage(split_dir: Path, out_dir: Path, weak, acfg: AnnotateConfig, template: TemplateConfig,
                   cluster_cfg, log=print, actor_cls=None, role: str = "weak") -> dict:
    """Config in, weak_labels out. Skipped when complete; continues a partial run.
    Evaluation reuses it on the test split with the strong role's actor class."""
    import ray

    from actors.weak import WeakActor
    from cluster.connect import connect
    from cluster.plan import plan_resources
    from cluster.worker_group import WorkerGroup

    split_dir, out_dir = Path(split_dir), Path(out_dir)
    if acfg.method == "seam":
        raise ValueError("annotate.method: seam runs through pipelines.seam_annotate.seam_stage (w2s run does this)")
    if acfg.method == "naive" and len(weak.models) != 1:
        raise ValueError(f"annotate.method: naive uses one weak model, weak.models has {len(weak.models)} (use ensemble)")
    names = [m.name for m in weak.models]
    # what determines the labels: the models, the method and the prompts (not weak.train, which
    # only matters through the fine-tuned model directories named in the specs)
    fp = fingerprint({"weak": [asdict(m) for m in weak.models], "annotate": asdict(acfg), "template": asdict(template),
                      "input": sorted(p.name for p in split_dir.glob("*.parquet"))})
    summary, done = open_stage(out_dir, fp, "weak/annotate", log)
    if summary:
        log(f"annotate {out_dir.name}: complete, skipped ({summary['rows']} rows)")
        return summary

    plan = plan_resources({role: len(names)}, cluster_cfg, _cluster_cpus(cluster_cfg))
    connect(cluster_cfg, plan.total_gpus)
    log(f"annotate {out_dir.name}: {acfg.method} with {len(names)} model(s) {names}; {plan.describe()}")
    t0 = time.time()
    kwargs = [{"name": m.name, "spec": m.spec, "backend": m.backend} for m in weak.models]
    with WorkerGroup(actor_cls or WeakActor, plan.roles[role], cluster_cfg, kwargs, names) as group:
        log(f"annotate {out_dir.name}: actors ready in {time.time() - t0:.1f} s on GPUs "
            f"{[i['gpu_ids'] for i in group.infos]}")
        t1 = time.time()
        tokens0 = sum(ray.get([a.tokens_seen.remote() for a in group.actors]))
        ds = pending_rows(split_dir, done, log, "annotate")
        ds = ds.map_batches(
            score_batch, batch_size=acfg.batch_rows, batch_format="pyarrow", num_cpus=TASK_CPUS,
            compute=ray.data.TaskPoolStrategy(size=acfg.max_in_flight),
            fn_kwargs={"actors": group.actors, "names": names, "weights": weak.weights, "method": acfg.method,
                       "num_permutations": acfg.num_permutations, "temperature": acfg.temperature,
                       "template": template},
        )
        ds.write_parquet(str(out_dir), ray_remote_args={"num_cpus": TASK_CPUS})
        seconds = time.time() - t1
        tokens = sum(ray.get([a.tokens_seen.remote() for a in group.actors])) - tokens0
    return finalize(split_dir, out_dir, names, acfg, fp, seconds, tokens, log)


def finalize(split_dir: Path, out_dir: Path, names: list[str], acfg: AnnotateConfig, fp: str,
             seconds: float, tokens: int, log=print) -> dict:
    table = read_complete(out_dir, split_dir)
    summary = summarize(table, names, kept_mask(table, acfg.filter_percentile, acfg.tie_break))
    summary.update({"stage": out_dir.name, "fingerprint": fp, "method": acfg.method,
                    "filter_percentile": acfg.filter_percentile,
                    "tie_break": acfg.tie_break,
                    "tau": rel.uncertainty_threshold(table["entropy"].to_pylist(), acfg.filter_percentile),
                    "seconds": round(seconds, 2),
                    "rows_per_s": round(table.num_rows / max(seconds, 1e-9), 2), "tokens": tokens})
    (out_dir / "_SUCCESS.json").write_text(json.dumps(summary, indent=1))
    log(summary_line(summary))
    return summary


def summary_line(s: dict) -> str:
    line = f"annotate {s.get('stage', '')}: {s['rows']} rows in {s['seconds']:.1f} s ({s['rows_per_s']:.2f} rows/s, {s['tokens']} tokens)"
    if s["accuracy"] is not None:
        line += f"; weak-label accuracy {s['accuracy']:.3f}"
        if s["method"] == "reliability":
            line += f" (kept {s['kept']} rows: {_fmt(s['accuracy_kept'])}, filtered: {_fmt(s['accuracy_filtered'])})"
    return line


def _fmt(x):
    return "n/a" if x is None else f"{x:.3f}"


def _cluster_cpus(cluster_cfg) -> float:
    import os

    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("CPU", 1.0)
    return float(cluster_cfg.num_cpus or os.cpu_count() or 1)
