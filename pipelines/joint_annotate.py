"""Joint-decoding annotation (seed 003 section 4.1, Eq. 6) as a Ray Data stage.

Each weak model (one WeakActor on its own bundle) proposes its top M beams per prompt; the union
of the M x N texts is scored by every weak model by teacher forcing, and the candidate with the
largest sum_i lambda_i P(y | theta_i) becomes the `target` (pure logic: pipelines/joint_decoding.py).
Per Ray Data batch there is ONE batched `beam_search` call and ONE batched `token_logprobs`
call per weak model (all rows of the batch at once; the N models' calls run concurrently).

Output: <out_dir>/joint_labels.parquet, one row per input: id, prompt (as the weak models saw it),
target, target_index, num_candidates, candidates (JSON: text, proposed_by, beam_logps, logps [N],
num_tokens [N], score, log_score), weak_top (each weak model's own top beam, cleaned),
target_token_logps (per weak model, log p of each token of `continuation(target)`: the
wordpieces of the token-level soft labels, training/soft_labels.py), reference.
Finished batches are kept under _shards/, so an interrupted run resumes; _SUCCESS.json holds
the fingerprint, counts, rows/s and, where references exist, exact match / token F1 of the
target and of each weak model's top beam.

    .venv/bin/python -m pipelines.joint_annotate configs/joint.yaml [key=value ...]
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from cluster.config import ClusterConfig
from pipelines.runner import Role, StreamStage, run_stage, write_atomic

@dataclass
class JointConfig:
    num_beams: int = 2  # M beams per weak model
    max_new_tokens: int = 24
    weights: list[float] = field(default_factory=list)  # lambda_i per weak model; empty: all 1
    prompt_format: str = "Q: {prompt}\nA:"
    first_line: bool = True  # a beam ends at its first newline
    batch_rows: int = 8
    max_in_flight: int = 2  # Ray Data batches in flight

    def __post_init__(self):
        if self.num_beams < 1:
            raise ValueError(f"num_beams: must be >= 1, got {self.num_beams}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.batch_rows < 1:
            raise ValueError(f"batch_rows: must be >= 1, got {self.batch_rows}")
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight: must be >= 1, got {self.max_in_flight}")
        if "{prompt}" not in self.prompt_format:
            raise ValueError("prompt_format: must contain {prompt}")
        w = [float(x) for x in self.weights]
        if w and (not all(np.isfinite(w)) or any(x < 0 for x in w) or not any(x > 0 for x in w)):
            raise ValueError(f"weights: must be finite, >= 0 and not all 0, got {self.weights}")
        self.weights = w

    def resolved_weights(self, n: int) -> list[float]:
        if not self.weights:
            return [1.0] * n
        if len(self.weights) != n:
            raise ValueError(f"joint.weights: {len(self.weights)} weights for {n} weak models")
        return list(self.weights)


# ---------------------------------------------------------------- text helpers and metrics

def clean(text: str, first_line: bool = True) -> str:
    text = text.strip()
    return text.split("\n", 1)[0].strip() if first_line else text


def render(fmt: str, prompt: str) -> str:
    return fmt.replace("{prompt}", prompt)  # not str.format: prompts may hold braces


def after(prompt: str, text: str) -> str:
    """A response text as it follows its prompt: " text" after "...Solution:", "text" after a
    prompt that ends in whitespace (a newline-ended prompt continued with " text" taught the
    agents to start with a space, and to stop at once on a newline: empty answers)."""
    return text if not prompt or prompt[-1].isspace() else " " + text


def _norm_tokens(text: str | None) -> list[str]:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = (text or "").lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return text.split()


def exact_match(pred: str | None, ref: str) -> float:
    return float(_norm_tokens(pred) == _norm_tokens(ref))


def token_f1(pred: str | None, ref: str) -> float:
    p, r = _norm_tokens(pred), _norm_tokens(ref)
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


# ---------------------------------------------------------------- the batch function

JOINT_SCHEMA = pa.schema([("id", pa.string()), ("prompt", pa.string()), ("target", pa.string()),
                          ("target_index", pa.int64()), ("num_candidates", pa.int64()),
                          ("candidates", pa.string()), ("weak_top", pa.list_(pa.string())),
                          ("target_token_logps", pa.list_(pa.list_(pa.float64()))),
                          ("reference", pa.string())])


def continuation(text: str, chat: bool) -> str:
    """The continuation a weak model scores for an answer text: a base model continues "...A:"
    with " text"; a chat model starts its answer turn with "text"."""
    return text if chat else " " + text


def joint_batch(batch: pa.Table, *, actors: dict, chats: list[bool], weights: list[float],
                cfg: JointConfig) -> pa.Table:
    """One Ray Data batch: Eq. 6 over all its rows with one batched call per weak model per step."""
    import ray

    from pipelines.joint_decoding import joint_decode

    actors = actors["weak"]
    rows = batch.to_pylist()
    prompts = [render(cfg.prompt_format, r["prompt"]) for r in rows]
    beam_refs: list = []
    lp_refs: list = []
    tops: dict[int, list[str]] = {}

    def beams_fn(i: int, ps: list[str]):
        if not beam_refs:  # all N models decode concurrently; joint_decode asks for them in order
            beam_refs.extend(a.beam_search.remote(ps, cfg.num_beams, cfg.max_new_tokens, c)
                             for a, c in zip(actors, chats))
        out = ray.get(beam_refs[i])
        tops[i] = [clean(b[0][0], cfg.first_line) if b else "" for b in out]
        return out

    token_lps: dict[int, list[list[float]]] = {}

    def logprob_fn(i: int, ps: list[str], cs: list[str]):
        if not lp_refs:
            lp_refs.extend(a.token_logprobs.remote(ps, [continuation(x, c) for x in cs], c)
                           for a, c in zip(actors, chats))
        token_lps[i] = ray.get(lp_refs[i])  # kept: the target's per-token scores feed the soft labels
        return [(float(np.sum(t, dtype=np.float64)), len(t)) for t in token_lps[i]]

    decoded = joint_decode(prompts, beams_fn, logprob_fn, weights, cfg.num_beams,
                           clean=lambda t: clean(t, cfg.first_line))
    out, pos = [], 0
    for k, (r, p, d) in enumerate(zip(rows, prompts, decoded)):
        t = d["target_index"]
        target_lps = None if t is None else [token_lps[i][pos + t] for i in range(len(actors))]
        pos += len(d["candidates"])
        out.append({"id": r["id"], "prompt": p, "target": d["target"], "target_index": t,
                    "num_candidates": len(d["candidates"]), "candidates": json.dumps(d["candidates"]),
                    "weak_top": [tops[i][k] for i in range(len(actors))], "target_token_logps": target_lps,
                    "reference": r.get("reference")})
    return pa.Table.from_pylist(out, schema=JOINT_SCHEMA)


# ---------------------------------------------------------------- the stage

def joint_stage(split_dir: Path, out_dir: Path, weak: list, cfg: JointConfig, cluster_cfg: ClusterConfig,
                log=print) -> dict:
    """Split in, joint_labels.parquet out (through the streaming-stage runner). weak: the
    ensemble's ModelConfigs (chat: wrap that model's prompts in its chat template). Skipped when
    complete with the same config; continues a partial run."""
    from actors.weak import WeakActor

    members = [{"name": m.name, "spec": m.spec, "backend": m.backend, "chat": m.chat} for m in weak]
    if not members:
        raise ValueError("joint_stage: no weak models")
    weights = cfg.resolved_weights(len(members))
    names = [m["name"] for m in members]
    out_dir = Path(out_dir)
    return run_stage(StreamStage(
        kind="weak_labels/joint", split_dir=Path(split_dir), out_dir=out_dir, label="joint",
        config={"joint": asdict(cfg), "weak": [{**m, "backend": asdict(m["backend"])} for m in members]},
        what="joint", describe=(f"{len(members)} weak models {names}, M={cfg.num_beams} beams, max_new_tokens "
                                f"{cfg.max_new_tokens}, weights {weights}"),
        roles=[Role("weak", WeakActor, [{k: m[k] for k in ("name", "spec", "backend")} for m in members], names)],
        batch_fn=joint_batch, batch_rows=cfg.batch_rows, max_in_flight=cfg.max_in_flight,
        batch_kwargs={"chats": [m["chat"] for m in members], "weights": weights, "cfg": cfg},
        schema=JOINT_SCHEMA, finalize=lambda table, run: finalize_joint(out_dir, names, table)), cluster_cfg, log)


def metrics(table: pa.Table, names: list[str]) -> dict | None:
    """Exact match / token F1 vs the reference of the target and of each weak model's top beam
    (rows with a reference only); None when no row has one."""
    rows = [r for r in table.select(["target", "weak_top", "reference"]).to_pylist() if r["reference"]]
    if not rows:
        return None
    out = {"rows": len(rows)}
    systems = {"joint": [r["target"] for r in rows]}
    systems.update({n: [r["weak_top"][i] for r in rows] for i, n in enumerate(names)})
    for sys_name, preds in systems.items():
        out[sys_name] = {"em": float(np.mean([exact_match(p, r["reference"]) for p, r in zip(preds, rows)])),
                         "f1": float(np.mean([token_f1(p, r["reference"]) for p, r in zip(preds, rows)]))}
    return out


def finalize_joint(out_dir: Path, names: list[str], table: pa.Table) -> dict:
    path = write_atomic(table, Path(out_dir) / "joint_labels.parquet")
    cands = [json.loads(c) for c in table["candidates"].to_pylist()]
    from_model = {n: sum(1 for cs, t in zip(cands, table["target_index"].to_pylist())
                         if t is not None and i in cs[t]["proposed_by"]) for i, n in enumerate(names)}
    summary = {"method": "joint", "no_target": sum(t is None for t in table["target"].to_pylist()),
               "mean_candidates": float(np.mean(table["num_candidates"].to_pylist())),
               "target_proposed_by": from_model, "models": names,
               "metrics": metrics(table, names), "path": str(path)}
    m = summary["metrics"]
    scores = "" if not m else "; EM/F1 " + ", ".join(
        f"{k} {m[k]['em']:.3f}/{m[k]['f1']:.3f}" for k in ["joint", *names])
    summary["line"] = (f"{summary['mean_candidates']:.2f} candidates/row, target proposed by {from_model}{scores}")
    return summary


def metrics_markdown(summary: dict) -> str:
    m = summary.get("metrics")
    if not m:
        return "(no references: no metrics)"
    lines = [f"| system ({m['rows']} rows) | exact match | token F1 |", "|---|---|---|"]
    for k in ["joint", *summary["models"]]:
        label = "joint decoding (Eq. 6)" if k == "joint" else f"{k} top beam"
        lines.append(f"| {label} | {m[k]['em']:.3f} | {m[k]['f1']:.3f} |")
    return "\n".join(lines)
