"""`w2s run` on a generation task (task: generation; seed 003 section 4): the weak ensemble agrees
on one target text per prompt by joint decoding, the strong model learns it.

    w2s run configs/gen_w2s.yaml [key=value ...]

data (gen_data: prompt + reference) -> weak_labels (joint decoding, Eq. 6, with each weak model's
per-token log-probs of the target) -> strong_ceiling (SFT on the references) -> strong_w2s/<method>
(top_beam: SFT on the first weak model's own top beam; joint: SFT on the joint target;
soft_tokens: token-level soft labels, Eq. 7-8) -> eval (greedy answers on test: exact match and
token F1 vs the reference for the weak models, the joint target and every strong model; PGR on
token F1 with the joint decoding of the weak ensemble as the supervisor) -> report.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

GEN_EVAL_SCHEMA = pa.schema([("id", pa.string()), ("prompt", pa.string()), ("answer", pa.string()),
                             ("reference", pa.string())])


def members(cfg) -> list[dict]:
    """The weak ensemble as joint_stage members (the chat flag per model from joint.chat)."""
    chats = cfg.joint.resolved_chat(len(cfg.weak.models))
    return [{"name": m.name, "spec": m.spec, "backend": m.backend, "chat": c} for m, c in zip(cfg.weak.models, chats)]


def stage_data(cfg, log=print) -> dict:
    from pipelines.generation import prepare_gen_data

    return prepare_gen_data(cfg.gen_data, cfg.root / "data", log)


def stage_joint(cfg, log=print) -> dict:
    from pipelines.joint_annotate import joint_stage

    return joint_stage(cfg.root / "data" / "held_out", cfg.root / "weak_labels", members(cfg), cfg.joint,
                       cfg.cluster, log)


def _rendered(cfg, split: str) -> list[dict]:
    from pipelines.data import read_split
    from pipelines.joint_annotate import render

    return [dict(r, prompt=render(cfg.joint.prompt_format, r["prompt"])) for r in read_split(cfg.root / "data" / split)]


def stage_ceiling(cfg, log=print) -> dict:
    from training.examples import GROUND_TRUTH, sequence_examples
    from training.stages import sequence_stage

    ex = sequence_examples(_rendered(cfg, "held_out"), GROUND_TRUTH)
    return sequence_stage(cfg.root, cfg.strong, GROUND_TRUTH, ex, cfg.root / "strong_ceiling", log)


def soft_context(cfg) -> dict:
    """Tokenizers and weights the token-level soft labels need (the driver builds the targets)."""
    from actors.registry import load_tokenizer
    from pipelines.joint_annotate import continuation

    ms = members(cfg)
    return {"weak_toks": [load_tokenizer(m["spec"]) for m in ms],
            "weak_prefixes": [continuation("", m["chat"]) for m in ms],
            "weights": cfg.joint.resolved_weights(len(ms)), "strong_tok": load_tokenizer(cfg.strong.spec)}


def stage_w2s(cfg, log=print) -> dict:
    from training.examples import sequence_examples
    from training.stages import sequence_stage

    rows = pq.read_table(cfg.root / "weak_labels" / "joint_labels.parquet").to_pylist()
    out = {}
    for method in cfg.strong.methods:
        soft = soft_context(cfg) if method == "soft_tokens" else None
        ex = sequence_examples(rows, method, soft=soft)
        out[method] = sequence_stage(cfg.root, cfg.strong, method, ex, cfg.root / "strong_w2s" / method, log)
    return out


def eval_targets(cfg) -> dict[str, str]:
    targets = {"strong zero-shot": cfg.strong.spec, "strong ceiling": str(cfg.root / "strong_ceiling" / "model")}
    targets.update({f"w2s {m}": str(cfg.root / "strong_w2s" / m / "model") for m in cfg.strong.methods})
    return targets


def generate_stage(rows: list[dict], out_dir: Path, spec: str, cfg, log=print, batch: int = 16) -> pa.Table:
    """Greedy answers of one strong model to the (rendered) test prompts, first line kept;
    <out_dir>/answers.parquet, skipped when present."""
    from actors.strong import StrongActor
    from cluster.plan import plan_resources
    from cluster.worker_group import WorkerGroup
    from pipelines.annotate import _cluster_cpus
    import ray

    from pipelines.joint_annotate import clean

    path = Path(out_dir) / "answers.parquet"
    if path.is_file():
        return pq.read_table(path)
    plan = plan_resources({"strong": 1}, cfg.cluster, _cluster_cpus(cfg.cluster))
    stop = ["\n"] if cfg.joint.first_line else None
    answers: list[str] = []
    t0 = time.time()
    with WorkerGroup(StrongActor, plan.roles["strong"], cfg.cluster,
                     [{"name": "strong", "spec": spec, "backend": cfg.strong.backend}], ["strong"]) as g:
        for i in range(0, len(rows), batch):
            part = [r["prompt"] for r in rows[i:i + batch]]
            out = ray.get(g.actors[0].generate.remote(part, 1, cfg.joint.max_new_tokens, 0.0, 0, False, stop=stop))
            answers += [clean(o[0][0], cfg.joint.first_line) for o in out]
            log(f"eval {Path(out_dir).name}: {len(answers)}/{len(rows)} answers "
                f"({len(answers) / max(time.time() - t0, 1e-9):.2f} rows/s)")
    table = pa.Table.from_pylist([{"id": r["id"], "prompt": r["prompt"], "answer": a, "reference": r["reference"]}
                                  for r, a in zip(rows, answers)], schema=GEN_EVAL_SCHEMA)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)
    return table


def scores(answers: list[str | None], refs: list[str]) -> dict:
    from pipelines.joint_annotate import exact_match, token_f1

    return {"em": float(np.mean([exact_match(a, r) for a, r in zip(answers, refs)])),
            "f1": float(np.mean([token_f1(a, r) for a, r in zip(answers, refs)]))}


def stage_eval(cfg, log=print) -> dict:
    """Token F1 (the `accuracy` entries) and exact match on test; PGR on token F1 (seed 000 Eq. 4)
    with the weak ensemble's joint decoding as the supervisor."""
    from pipelines.evaluate import pgr
    from pipelines.joint_annotate import joint_stage

    ev = cfg.root / "eval"
    weak = joint_stage(cfg.root / "data" / "test", ev / "weak_joint", members(cfg), cfg.joint, cfg.cluster, log)
    joint_rows = pq.read_table(ev / "weak_joint" / "joint_labels.parquet").to_pylist()
    refs = [r["reference"] for r in joint_rows]
    result = {"weak joint": scores([r["target"] for r in joint_rows], refs)}
    for i, m in enumerate(cfg.weak.models):
        result[f"weak {m.name}"] = scores([r["weak_top"][i] for r in joint_rows], refs)
    rows = {r["id"]: r for r in _rendered(cfg, "test")}
    rows = [rows[r["id"]] for r in joint_rows]  # the same order
    for name, spec in eval_targets(cfg).items():
        t = generate_stage(rows, ev / name.replace(" ", "_"), spec, cfg, log)
        result[name] = scores(t["answer"].to_pylist(), t["reference"].to_pylist())
    f1 = {n: s["f1"] for n, s in result.items()}
    w2s = [n for n in f1 if n.startswith("w2s ")]
    return {"metric": "token F1", "accuracy": f1, "em": {n: s["em"] for n, s in result.items()},
            "supervisor": "weak joint", "ceiling": "strong ceiling", "rows": len(rows), "weak_seconds": weak["seconds"],
            "pgr": {n: pgr(f1[n], f1["weak joint"], f1["strong ceiling"]) for n in w2s}, "deception": {}}


def stages() -> list:
    return [("data", stage_data), ("weak_labels", stage_joint), ("strong_ceiling", stage_ceiling),
            ("strong_w2s", stage_w2s), ("eval", stage_eval)]

