"""SEAM weak annotation (seed 000) as a Ray Data stage: strong actors search, a weak actor decides.

Two actor groups, each on its own GPU bundle (`plan_resources({"strong": 1, "weak": 1})`):
a StrongActor (the pre-trained strong model M_s) and a WeakActor (the aligned weak model M_w).
Ray Data streams the held-out rows; each batch runs `pipelines.seam.search(rows, expand_fn, cfg)`,
whose expand_fn turns every phase of a search step into ONE batched actor call for all the rows
still searching (so the calls per batch grow with the search depth, not with the rows):

  weights  -> strong.score_options(texts, letter labels, chat, "label")      (Eq. 5 edge weights)
  thought  -> strong.generate(texts, 1, seam.thought_max_new_tokens, 0.0, stop=seam.thought_stop)  (t(n), greedy)
  entropy  -> strong.score_options(texts, labels, chat, template.answer)      (H(x, t(n)))
  decide   -> weak.score_options(texts, labels, chat, template.answer)        (y = argmax p_Mw)

The same batch also scores the plain prompt (the run's template, no knowledge) once on each model,
which gives the baselines' columns from the same rows (seed 000, "Baselines"):
  naive        the weak model alone            naive_probs / naive_label
  self_reward  the strong model alone          strong_probs / self_reward_label
  ws_ensemble  (p_Ms + p_Mw) / 2               ws_ensemble_probs / ws_ensemble_label
  wsc          keep where the two argmax agree wsc_keep (the label is the naive one)
  auxconf      strong argmax where max p_Ms > stage.auxconf_threshold, else weak
               auxconf_label / auxconf_corrected
  uncertain    (at finalize) keep the filter_percentile % of naive labels with the lowest entropy
SEAM's own columns: weak_label / weak_probs / weak_conf (the decision with t(n_h)), tree (the
FF-tree path as a JSON string, root first, each node with chain, thought, probs, entropy, score,
weight, gain), expanded (every scored node, JSON), hidden (n_h's index in tree, null: none),
knowledge, tree_information, stop_reason, and per batch the search stats (batch_id, batch_stats).

Output: <out_dir>/_shards/*.parquet while running (a re-run skips rows already written, partial
files are discarded), then finalize checks every input row is there once, applies the
dataset-level tree-information filter (`seam.filter_mask`: a `kept` column; all kept under the
no_filter ablations) and the uncertain filter (`uncertain_keep`), and writes
<out_dir>/seam_labels.parquet and _SUCCESS.json (fingerprint of models, prompts, principles and
config; a different config is refused). Ablations come from SeamConfig.ablation.

    .venv/bin/python -m pipelines.seam_annotate configs/seam.yaml [key=value ...]
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from actors.backend import BackendConfig
from actors.strong import StrongActor
from actors.weak import WeakActor
from cluster.config import ClusterConfig
from pipelines import seam
from actors.prompts import TemplateConfig, render
from pipelines.runner import Role, StreamStage, read_manifest, run_stage, write_atomic

LABELS_FILE = "seam_labels.parquet"


# ---------------------------------------------------------------- config

@dataclass
class SeamStageConfig:
    batch_rows: int = 8  # rows per Ray Data batch = one search() over them
    max_in_flight: int = 2  # batches searched concurrently (the weak actor decides one while the strong searches the next)
    # AuxConf baseline: the weak label is replaced by the strong argmax where max_r p_Ms(r | x) is
    # higher than this (the paper gives no value; the strong model's confidence scale decides)
    auxconf_threshold: float = 0.7
    thought_seed: int = 0  # generate() seed (thoughts are greedy; kept for sampling backends)

    def __post_init__(self):
        for name in ("batch_rows", "max_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")
        if not 0 <= self.auxconf_threshold <= 1:
            raise ValueError("auxconf_threshold: must be in [0, 1]")


# ---------------------------------------------------------------- actors that count forward passes

class _Counting:
    """Counts the model's forward calls (a decoding step of generate is one) via a pre-hook."""

    def _install_counter(self) -> None:
        self._forwards = 0
        model = getattr(self.backend, "model", None)
        if model is not None and hasattr(model, "register_forward_pre_hook"):
            model.register_forward_pre_hook(self._count)

    def _count(self, module, args) -> None:
        self._forwards += 1

    def forward_calls(self) -> int:
        return self._forwards


class SeamStrongActor(_Counting, StrongActor):
    def __init__(self, name: str, spec: str, backend: BackendConfig):
        super().__init__(name, spec, backend)
        self._install_counter()


class SeamWeakActor(_Counting, WeakActor):
    def __init__(self, name: str, spec: str, backend: BackendConfig):
        super().__init__(name, spec, backend)
        self._install_counter()


# ---------------------------------------------------------------- one batch

_F, _I = pa.list_(pa.float64()), pa.list_(pa.int64())
SCHEMA = pa.schema([
    ("id", pa.string()), ("prompt", pa.string()), ("options", pa.list_(pa.string())), ("label", pa.int64()),
    # SEAM
    ("weak_label", pa.int64()), ("weak_probs", _F), ("weak_conf", pa.float64()), ("tree", pa.string()),
    ("expanded", pa.string()), ("hidden", pa.int64()), ("knowledge", pa.string()), ("tree_information", pa.float64()),
    ("tree_depth", pa.int64()), ("stop_reason", pa.string()),
    # baselines
    ("naive_probs", _F), ("naive_label", pa.int64()), ("naive_entropy", pa.float64()), ("strong_probs", _F),
    ("self_reward_label", pa.int64()), ("ws_ensemble_probs", _F), ("ws_ensemble_label", pa.int64()),
    ("wsc_keep", pa.bool_()), ("auxconf_label", pa.int64()), ("auxconf_corrected", pa.bool_()),
    # Consultancy / Debate (seam.protocols; null when off)
    ("consultancy_side", pa.int64()), ("consultancy_argument", pa.string()), ("consultancy_probs", _F),
    ("consultancy_label", pa.int64()), ("debate_transcript", pa.string()), ("debate_probs", _F),
    ("debate_label", pa.int64()),
    # search stats of the batch the row was in
    ("batch_id", pa.string()), ("batch_stats", pa.string()),
])


def run_protocols(rows: list[dict], strong, weak, cfg: seam.SeamConfig, principles: seam.PrincipleSet,
                  template: TemplateConfig, seed: int = 0) -> list[dict]:
    """The Consultancy and Debate columns of a batch (pipelines/debate.py): the strong speeches, one
    batched generate call each, then one batched weak decision per protocol."""
    import ray

    from pipelines import debate

    out: list[dict] = [{} for _ in rows]
    if not cfg.protocols:
        return out
    pairs = [(n, principles.description(n)) for n in principles.names]

    def generate(texts: list[str]) -> list[str]:
        got = ray.get(strong.generate.remote(texts, 1, cfg.argument_max_new_tokens, 0.0, seed, template.chat,
                                             stop=list(cfg.argument_stop)))
        return [seam.clean_thought(g[0][0], cfg.argument_stop) for g in got]

    def decide(knowledge: list[str]) -> list[list[float]]:
        rendered = [render(seam.with_knowledge(r["prompt"], k, cfg), r["options"], range(len(r["options"])), template)
                    for r, k in zip(rows, knowledge)]
        probs = ray.get(weak.score_options.remote([t for t, _ in rendered], [lb for _, lb in rendered],
                                                  template.chat, template.answer))
        return [np.asarray(p, dtype=np.float64).tolist() for p in probs]

    if "consultancy" in cfg.protocols:
        res = debate.consult(rows, generate, pairs)
        for o, x, p in zip(out, res, decide([x["knowledge"] for x in res])):
            o.update(consultancy_side=x["side"], consultancy_argument=x["argument"], consultancy_probs=p,
                     consultancy_label=debate.verdict(p))
    if "debate" in cfg.protocols:
        res = debate.debate(rows, generate, pairs, cfg.debate_turns)
        for o, x, p in zip(out, res, decide([x["knowledge"] for x in res])):
            o.update(debate_transcript=json.dumps(x["speeches"]), debate_probs=p, debate_label=debate.verdict(p))
    return out


def make_expand_fn(strong, weak, cfg: seam.SeamConfig, template: TemplateConfig, seed: int = 0):
    """expand_fn for `seam.search`: one actor call per phase, for all of the phase's requests."""
    import ray

    def expand(requests: list[seam.Request]) -> list:
        texts, labels = seam.model_inputs(requests, template)
        kind = requests[0].kind
        if kind == "thought":
            # stop strings end decoding early; seam.clean_thought cuts at the same strings anyway
            out = ray.get(strong.generate.remote(texts, 1, cfg.thought_max_new_tokens, 0.0, seed, template.chat,
                                                 stop=list(cfg.thought_stop)))
            return [samples[0][0] for samples in out]
        actor = weak if kind == "decide" else strong
        answer = "label" if kind == "weights" else template.answer
        return [np.asarray(p, dtype=np.float64).tolist()
                for p in ray.get(actor.score_options.remote(texts, labels, template.chat, answer))]

    return expand


def seam_batch(batch: pa.Table, *, actors: dict, cfg: seam.SeamConfig, principles: seam.PrincipleSet,
               template: TemplateConfig, stage: SeamStageConfig) -> pa.Table:
    """Ray Data map function: SEAM search + weak decision over the batch, and the baselines."""
    import ray

    strong, weak = actors["strong"][0], actors["weak"][0]
    t0 = time.time()
    rows = batch.to_pylist()
    plain = [render(r["prompt"], r["options"], range(len(r["options"])), template) for r in rows]
    texts, labels = [t for t, _ in plain], [lb for _, lb in plain]
    # the baselines' plain-prompt scores: one call per model, queued before the search's calls
    naive_ref = weak.score_options.remote(texts, labels, template.chat, template.answer)
    strong_ref = strong.score_options.remote(texts, labels, template.chat, template.answer)
    res = seam.search([{"prompt": r["prompt"], "options": r["options"]} for r in rows],
                      make_expand_fn(strong, weak, cfg, template, stage.thought_seed), cfg, principles)
    w = np.array([np.asarray(p, dtype=np.float64) for p in ray.get(naive_ref)])
    s = np.array([np.asarray(p, dtype=np.float64) for p in ray.get(strong_ref)])
    self_reward = seam.self_reward(s)
    ens_label, ens_p = seam.ws_ensemble(s, w)
    _, wsc_keep = seam.wsc_filter(s, w)
    aux_label, aux_corr = seam.auxconf_correction(s, w, stage.auxconf_threshold)
    protocols = run_protocols(rows, strong, weak, cfg, principles, template, stage.thought_seed)
    st = res.stats
    stats = dict(st, rows=len(rows), seconds=round(time.time() - t0, 3),
                 strong_calls=1 + sum(v for k, v in st["calls_by_kind"].items() if k != "decide"),
                 weak_calls=1 + st["calls_by_kind"]["decide"])
    batch_id, stats_json = rows[0]["id"], json.dumps(stats)
    out = []
    for i, (r, o) in enumerate(zip(rows, res.rows)):
        out.append({
            "id": r["id"], "prompt": r["prompt"], "options": r["options"], "label": r["label"],
            "weak_label": o["weak_label"], "weak_probs": o["weak_probs"], "weak_conf": o["weak_conf"],
            "tree": json.dumps(o["tree"]), "expanded": json.dumps(o["expanded"]), "hidden": o["hidden"],
            "knowledge": o["knowledge"], "tree_information": o["tree_information"],
            "tree_depth": len(o["tree"]) - 1, "stop_reason": o["stop_reason"],
            "naive_probs": w[i].tolist(), "naive_label": int(w[i].argmax()), "naive_entropy": seam.entropy(w[i]),
            "strong_probs": s[i].tolist(), "self_reward_label": int(self_reward[i]),
            "ws_ensemble_probs": ens_p[i].tolist(), "ws_ensemble_label": int(ens_label[i]),
            "wsc_keep": bool(wsc_keep[i]), "auxconf_label": int(aux_label[i]), "auxconf_corrected": bool(aux_corr[i]),
            **protocols[i], "batch_id": batch_id, "batch_stats": stats_json})
    return pa.Table.from_pylist(out, schema=SCHEMA)


# ---------------------------------------------------------------- the stage

def stage_config(seam_cfg: seam.SeamConfig, strong_spec: str, strong_backend: BackendConfig, weak_model,
                 template: TemplateConfig, stage: SeamStageConfig) -> dict:
    """What determines the labels: models, prompts, principles, search config, the AuxConf threshold."""
    principles = seam.resolve_path(seam_cfg.principles_path)
    return {"seam": asdict(seam_cfg), "principles": hashlib.sha256(principles.read_bytes()).hexdigest(),
            "strong": {"spec": strong_spec, "backend": asdict(strong_backend)},
            "weak": {"spec": weak_model.spec, "backend": asdict(weak_model.backend)},
            "template": asdict(template), "auxconf_threshold": stage.auxconf_threshold,
            "thought_seed": stage.thought_seed}


def seam_stage(split_dir: Path, out_dir: Path, seam_cfg: seam.SeamConfig, strong_spec: str,
               strong_backend: BackendConfig, weak_model, template: TemplateConfig, cluster_cfg: ClusterConfig,
               log=print, stage_cfg: SeamStageConfig | None = None) -> dict:
    """Held-out split in, <out_dir>/seam_labels.parquet out (through the streaming-stage runner).
    Skipped when complete with the same config (another config is refused); continues a partial
    run. weak_model: anything with .spec, .backend and .name (a ModelConfig). Returns the
    manifest (also in _SUCCESS.json)."""
    stage = stage_cfg or SeamStageConfig()
    out_dir = Path(out_dir)
    weak_name = getattr(weak_model, "name", "weak")
    return run_stage(StreamStage(
        kind="weak_labels/seam", split_dir=Path(split_dir), out_dir=out_dir,
        config=stage_config(seam_cfg, strong_spec, strong_backend, weak_model, template, stage),
        what="SEAM/model/template", label=f"seam {out_dir.name}",
        describe=(f"strong {strong_spec} searches (max_depth {seam_cfg.max_depth}, ablation {seam_cfg.ablation}), "
                  f"weak {weak_model.spec} decides"),
        roles=[Role("strong", SeamStrongActor, [{"name": "strong", "spec": strong_spec, "backend": strong_backend}],
                    ["strong"]),
               Role("weak", SeamWeakActor, [{"name": "weak", "spec": weak_model.spec, "backend": weak_model.backend}],
                    ["weak"])],
        batch_fn=seam_batch, batch_rows=stage.batch_rows, max_in_flight=stage.max_in_flight,
        batch_kwargs={"cfg": seam_cfg, "principles": seam.load_principles(seam_cfg.principles_path),
                      "template": template, "stage": stage},
        schema=SCHEMA, counters={"strong_forwards": ("strong", "forward_calls"), "weak_forwards": ("weak", "forward_calls")},
        finalize=lambda table, run: finalize(out_dir, seam_cfg, table, run, weak_name)), cluster_cfg, log)


# ---------------------------------------------------------------- finalize and read back

def _acc(pred, y, mask=None) -> float | None:
    pred, y = np.asarray(pred), np.asarray(y)
    m = (y >= 0) if mask is None else (np.asarray(mask, dtype=bool) & (y >= 0))
    return float((pred[m] == y[m]).mean()) if m.any() else None


def table2(t: pa.Table) -> dict:
    """Weak-label accuracy per method (seed 000 Table 2) over a finalized seam_labels table:
    {method: {"accuracy", "rows"}}; filter methods count only the rows they keep."""
    y = np.array([-1 if v is None else v for v in t["label"].to_pylist()])
    col = {c: np.array(t[c].to_pylist()) for c in ("naive_label", "self_reward_label", "ws_ensemble_label",
                                                   "auxconf_label", "weak_label", "wsc_keep", "uncertain_keep", "kept")}
    methods = {"naive": ("naive_label", None), "uncertain_filter": ("naive_label", "uncertain_keep"),
               "self_reward": ("self_reward_label", None), "ws_ensemble": ("ws_ensemble_label", None),
               "auxconf": ("auxconf_label", None), "wsc_filter": ("naive_label", "wsc_keep"),
               "seam_no_filter": ("weak_label", None), "seam": ("weak_label", "kept")}
    for m in ("consultancy", "debate"):  # seam.protocols: the columns are null when off
        if f"{m}_label" in t.column_names and t[f"{m}_label"].null_count < t.num_rows:
            col[f"{m}_label"] = np.array(t[f"{m}_label"].to_pylist())
            methods[m] = (f"{m}_label", None)
    return {m: {"accuracy": _acc(col[p], y, None if k is None else col[k]),
                "rows": int(len(y) if k is None else col[k].sum())} for m, (p, k) in methods.items()}


TABLE2_NAMES = {"naive": "Naive W2S", "uncertain_filter": "Uncertain Filter [†]", "self_reward": "Self-Reward",
                "ws_ensemble": "WS-Ensemble", "auxconf": "AuxConf", "wsc_filter": "WSC Filter",
                "consultancy": "Consultancy", "debate": "Debate", "seam_no_filter": "SEAM w/o Filter",
                "seam": "SEAM [†]"}


def table2_markdown(acc: dict, column: str = "weak-label accuracy") -> str:
    lines = [f"| method | {column} | rows labelled |", "|---|---|---|"]
    for m, name in TABLE2_NAMES.items():
        if m not in acc:  # Consultancy / Debate when seam.protocols left them off
            continue
        a = acc[m]["accuracy"]
        lines.append(f"| {name} | {'n/a' if a is None else f'{100 * a:.1f}'} | {acc[m]['rows']} |")
    return "\n".join(lines)


def finalize(out_dir: Path, seam_cfg: seam.SeamConfig, table: pa.Table, run: dict, weak_name: str) -> dict:
    kept = seam.filter_mask(table["tree_information"].to_pylist(), seam_cfg)
    # Uncertain Filter baseline: drop the filter_percentile % most uncertain naive labels
    uncertain = seam.tree_filter([-h for h in table["naive_entropy"].to_pylist()], seam_cfg.filter_percentile)
    table = table.append_column("kept", pa.array(kept)).append_column("uncertain_keep", pa.array(uncertain))
    write_atomic(table, out_dir / LABELS_FILE)

    # search stats per batch (of this run and earlier ones)
    batches = {}
    for bid, st in zip(table["batch_id"].to_pylist(), table["batch_stats"].to_pylist()):
        batches.setdefault(bid, json.loads(st))
    bl = list(batches.values())
    rows_new = run["rows_new"]
    summary = {
        "method": "seam", "weak_name": weak_name,
        "labelled": int(sum(v is not None for v in table["label"].to_pylist())), "kept": int(kept.sum()),
        "ablation": seam_cfg.ablation, "max_depth": seam_cfg.max_depth, "filter_percentile": seam_cfg.filter_percentile,
        "strong_forwards": run["strong_forwards"], "weak_forwards": run["weak_forwards"],
        "strong_forwards_per_row": round(run["strong_forwards"] / max(rows_new, 1), 2),
        "weak_forwards_per_row": round(run["weak_forwards"] / max(rows_new, 1), 2),
        "batches": len(bl), "batch_rows": [b["rows"] for b in bl],
        "expand_calls_per_batch": [b["expand_calls"] for b in bl],
        "requests_per_batch": [b["requests"] for b in bl],
        "strong_calls": sum(b["strong_calls"] for b in bl), "weak_calls": sum(b["weak_calls"] for b in bl),
        "strong_calls_per_row": round(sum(b["strong_calls"] for b in bl) / table.num_rows, 3),
        "mean_tree_depth": float(np.mean(table["tree_depth"].to_pylist())),
        "hidden_none": int(sum(h is None for h in table["hidden"].to_pylist())),
        "auxconf_corrected": int(sum(table["auxconf_corrected"].to_pylist())),
        "wsc_kept": int(sum(table["wsc_keep"].to_pylist())),
        "table2": table2(table),
    }
    summary["line"] = summary_line(summary)
    return summary


def summary_line(s: dict) -> str:
    t = s["table2"]
    line = (f"{s['strong_forwards_per_row']:.1f} strong forward calls per row "
            f"({s['strong_calls_per_row']:.2f} strong actor calls per row, {s['batches']} batches)")
    if t["seam"]["accuracy"] is not None:
        line += (f"; accuracy naive {t['naive']['accuracy']:.3f}, SEAM w/o filter {t['seam_no_filter']['accuracy']:.3f}, "
                 f"SEAM (kept {t['seam']['rows']}) {t['seam']['accuracy']:.3f}")
    return line


def read_seam_labels(out_dir: Path) -> pa.Table:
    """The finalized SEAM labels (sorted by id, with `kept` and `uncertain_keep`)."""
    out_dir = Path(out_dir)
    if not (out_dir / "_SUCCESS.json").is_file():
        raise FileNotFoundError(f"{out_dir} is not a complete SEAM labels folder: run the SEAM stage first")
    return pq.read_table(out_dir / LABELS_FILE)


def as_weak_labels(out_dir: Path) -> pa.Table:
    """The SEAM labels as a weak_labels table (what `annotate.read_weak_labels` returns for a
    folder made with annotate.method=seam): SEAM's decision is weak_label / weak_probs /
    weak_conf and probs_<weak name>, `kept` is the tree-information filter; the baselines'
    columns stay for training.examples.SEAM_SOURCES."""
    summary = read_manifest(out_dir, "weak_labels/seam", "run the SEAM stage first")
    table = read_seam_labels(out_dir)
    return table.append_column(f"probs_{summary['weak_name']}", table["weak_probs"])
