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

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from actors.prompts import TemplateConfig, render
from pipelines import reliability as rel
from pipelines.formatting import fmt
from pipelines.runner import Role, StreamStage, batch_tokens_column, read_manifest, run_stage

# how annotate_stage combines the weak answers of a row (annotate.method is checked against the
# method registry by the run config; SEAM and joint decoding have stages of their own)
COMBINES = ("naive", "ensemble", "reliability")


@dataclass
class AnnotateConfig:
    method: str = "ensemble"
    num_permutations: int = 0  # reliability: option orders per row; 0 = all K!
    temperature: float = 0.2  # Eq. 4 T
    filter_percentile: float = 50.0  # uncertainty filter tau (section 4.2)
    # soft: ties in S_ent at tau broken by the soft vote's entropy, so exactly filter_percentile%
    # of rows are kept; none: the paper's literal S_ent <= tau (pipelines/reliability.py)
    tie_break: str = "soft"
    # rows per Ray Data batch = one call on every weak actor. Enough rows to fill the backend's
    # length-sorted micro-batches: on BoolQ 32-row batches ran at 0.65 of the in-process backend
    # per row, 128-row batches at 0.95 (docs/measurements.md)
    batch_rows: int = 64
    max_in_flight: int = 4  # batches scored concurrently (keeps every weak actor busy)

    def __post_init__(self):
        if self.num_permutations < 0:
            raise ValueError("num_permutations: must be >= 0 (0 = all orders)")
        if self.temperature <= 0:
            raise ValueError("temperature: must be > 0")
        if not 0 < self.filter_percentile <= 100:
            raise ValueError("filter_percentile: must be in (0, 100]")
        if self.tie_break not in ("soft", "none"):
            raise ValueError(f"tie_break: must be soft or none, got {self.tie_break!r}")
        for name in ("batch_rows", "max_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")


def output_schema(names: list[str]) -> pa.Schema:
    floats, ints = pa.list_(pa.float64()), pa.list_(pa.int64())
    return pa.schema(
        [("id", pa.string()), ("prompt", pa.string()), ("options", pa.list_(pa.string())), ("label", pa.int64())]
        + [(f"probs_{n}", floats) for n in names]
        + [("weak_probs", floats), ("weak_label", pa.int64()), ("weak_conf", pa.float64()),
           ("perms", pa.list_(ints)), ("answers", ints), ("emp_probs", floats), ("entropy", pa.float64()),
           ("soft_entropy", pa.float64()),
           ("reliability", floats), ("tokens", pa.int64())]
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


def score_batch(batch: pa.Table, *, actors: dict, role: str, names: list[str], weights: list[float], method: str,
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
    counted = ray.get([a.counted.remote("score_options", texts, labels, template.chat, template.answer)
                       for a in actors[role]])
    results = [r for r, _ in counted]
    out, pos = [], 0
    for r, perms in zip(rows, row_perms):
        per_model = [res[pos:pos + len(perms)] for res in results]
        pos += len(perms)
        c = combine_row(per_model, perms, weights, method, temperature)
        row = {"id": r["id"], "prompt": r["prompt"], "options": r["options"], "label": r["label"]}
        row.update({f"probs_{n}": p.tolist() for n, p in zip(names, c.pop("probs"))})
        row.update(c)
        out.append(row)
    table = pa.Table.from_pylist(out, schema=output_schema(names).remove(output_schema(names).get_field_index("tokens")))
    return table.append_column("tokens", batch_tokens_column(len(out), sum(t for _, t in counted)))


def kept_mask(table: pa.Table, percentile: float, tie_break: str) -> np.ndarray:
    """The uncertainty filter over a whole weak_labels table (rows sorted by id)."""
    soft = table["soft_entropy"].to_pylist() if tie_break == "soft" else None
    return rel.uncertainty_filter(table["entropy"].to_pylist(), percentile, soft)


def read_weak_labels(out_dir: Path) -> pa.Table:
    """All weak labels this stage wrote, sorted by id, with the `kept` column of the uncertainty
    filter (the filter's settings from the folder's own manifest). SEAM's labels are read by
    pipelines.seam_annotate.as_weak_labels."""
    out_dir = Path(out_dir)
    done = read_manifest(out_dir, "weak_labels/", "run `w2s annotate` first")
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


def annotate_stage(split_dir: Path, out_dir: Path, weak, acfg: AnnotateConfig, template: TemplateConfig,
                   cluster_cfg, log=print, actor_cls=None, role: str = "weak") -> dict:
    """Config in, weak_labels out (through the streaming-stage runner). Skipped when complete;
    continues a partial run. Evaluation reuses it on the test split with the strong role's actor."""
    from actors.weak import WeakActor

    if acfg.method not in COMBINES:
        raise ValueError(f"annotate.method: the annotate stage combines {COMBINES}, not {acfg.method!r} "
                         "(SEAM and joint decoding run stages of their own: w2s run picks them)")
    if acfg.method == "naive" and len(weak.models) != 1:
        raise ValueError(f"annotate.method: naive uses one weak model, weak.models has {len(weak.models)} (use ensemble)")
    names = [m.name for m in weak.models]
    out_dir = Path(out_dir)
    # what determines the labels: the models, the method and the prompts (not weak.train, which
    # only matters through the fine-tuned model directories named in the specs)
    config = {"weak": [asdict(m) for m in weak.models], "annotate": asdict(acfg), "template": asdict(template)}

    def finalize(table: pa.Table, run: dict) -> dict:
        summary = summarize(table, names, kept_mask(table, acfg.filter_percentile, acfg.tie_break))
        summary.update({"method": acfg.method, "filter_percentile": acfg.filter_percentile,
                        "tie_break": acfg.tie_break,
                        "tau": rel.uncertainty_threshold(table["entropy"].to_pylist(), acfg.filter_percentile)})
        summary["line"] = accuracy_line(summary)
        return summary

    stage = StreamStage(
        kind=f"weak_labels/{acfg.method}", split_dir=Path(split_dir), out_dir=out_dir, config=config,
        what="weak/annotate", label=f"annotate {out_dir.name}", shards="",
        describe=f"{acfg.method} with {len(names)} model(s) {names}",
        roles=[Role(role, actor_cls or WeakActor, [{"name": m.name, "spec": m.spec, "backend": m.backend}
                                                   for m in weak.models], names)],
        batch_fn=score_batch, batch_rows=acfg.batch_rows, max_in_flight=acfg.max_in_flight,
        batch_kwargs={"role": role, "names": names, "weights": weak.weights, "method": acfg.method,
                      "num_permutations": acfg.num_permutations, "temperature": acfg.temperature,
                      "template": template},
        schema=output_schema(names), finalize=finalize)
    return run_stage(stage, cluster_cfg, log)


def accuracy_line(s: dict) -> str:
    if s["accuracy"] is None:
        return ""
    line = f"weak-label accuracy {s['accuracy']:.3f}"
    if s["method"] == "reliability":
        line += f" (kept {s['kept']} rows: {fmt(s['accuracy_kept'])}, filtered: {fmt(s['accuracy_filtered'])})"
    return line


