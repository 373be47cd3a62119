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

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.runner import Role, StreamStage, run_stage, write_atomic

GEN_EVAL_SCHEMA = pa.schema([("id", pa.string()), ("prompt", pa.string()), ("answer", pa.string()),
                             ("reference", pa.string())])


def stage_data(cfg, log=print) -> dict:
    from pipelines.generation import prepare_gen_data

    return prepare_gen_data(cfg.gen_data, cfg.root / "data", log)


def _rendered(cfg, split: str) -> list[dict]:
    from pipelines.data import read_split
    from pipelines.joint_annotate import render

    return [dict(r, prompt=render(cfg.joint.prompt_format, r["prompt"])) for r in read_split(cfg.root / "data" / split)]


def stage_ceiling(cfg, log=print) -> dict:
    from training.examples import GROUND_TRUTH, sequence_examples
    from pipelines.train_stages import sequence_stage

    ex = sequence_examples(_rendered(cfg, "held_out"), GROUND_TRUTH)
    return sequence_stage(cfg.root, cfg.strong, GROUND_TRUTH, ex, cfg.root / "strong_ceiling", log)


def eval_targets(cfg) -> dict[str, str]:
    targets = {"strong zero-shot": cfg.strong.spec, "strong ceiling": str(cfg.root / "strong_ceiling" / "model")}
    targets.update({f"w2s {m}": str(cfg.root / "strong_w2s" / m / "model") for m in cfg.strong.methods})
    return targets


def answer_batch(batch: pa.Table, *, actors: dict, prompt_format: str, max_new_tokens: int,
                 first_line: bool) -> pa.Table:
    """Ray Data map function: greedy answers of the strong actor, cut at the first newline when
    first_line (a stop string, so no token is decoded past it)."""
    import ray

    from pipelines.joint_annotate import clean, render

    rows = batch.to_pylist()
    prompts = [render(prompt_format, r["prompt"]) for r in rows]
    out = ray.get(actors["strong"][0].generate.remote(prompts, 1, max_new_tokens, 0.0, 0, False,
                                                      stop=["\n"] if first_line else None))
    return pa.Table.from_pylist([{"id": r["id"], "prompt": p, "answer": clean(o[0][0], first_line),
                                  "reference": r["reference"]} for r, p, o in zip(rows, prompts, out)],
                                schema=GEN_EVAL_SCHEMA)


def generate_stage(split_dir: Path, out_dir: Path, spec: str, cfg, log=print) -> pa.Table:
    """Greedy answers of one strong model to the test prompts (through the streaming-stage
    runner); <out_dir>/answers.parquet, skipped when complete."""
    from actors.strong import StrongActor

    out_dir = Path(out_dir)

    def finalize(table: pa.Table, run: dict) -> dict:
        path = write_atomic(table, out_dir / "answers.parquet")
        return {"path": str(path), "line": f"{table.num_rows} answers ({spec})"}

    run_stage(StreamStage(
        kind="eval/answers", split_dir=Path(split_dir), out_dir=out_dir, label=f"eval {out_dir.name}",
        config={"spec": spec, "backend": asdict(cfg.strong.backend), "prompt_format": cfg.joint.prompt_format,
                "max_new_tokens": cfg.joint.max_new_tokens, "first_line": cfg.joint.first_line},
        what="strong/eval", describe=f"greedy answers of {spec}",
        roles=[Role("strong", StrongActor, [{"name": "strong", "spec": spec, "backend": cfg.strong.backend}],
                    ["strong"])],
        batch_fn=answer_batch, batch_rows=16, max_in_flight=2,
        batch_kwargs={"prompt_format": cfg.joint.prompt_format, "max_new_tokens": cfg.joint.max_new_tokens,
                      "first_line": cfg.joint.first_line},
        schema=GEN_EVAL_SCHEMA, finalize=finalize), cfg.cluster, log)
    return pq.read_table(out_dir / "answers.parquet")


def scores(answers: list[str | None], refs: list[str]) -> dict:
    """Exact match and token F1 (means), and each row's F1 (`rows`, for the bootstrap)."""
    from pipelines.joint_annotate import exact_match, token_f1

    rows = np.array([token_f1(a, r) for a, r in zip(answers, refs)], dtype=np.float64)
    return {"em": float(np.mean([exact_match(a, r) for a, r in zip(answers, refs)])), "f1": float(rows.mean()),
            "rows": rows}


def stage_eval(cfg, log=print) -> dict:
    """Token F1 (the `accuracy` entries) and exact match on test; PGR on token F1 (seed 000 Eq. 4)
    with the weak ensemble's joint decoding as the supervisor."""
    from pipelines.evaluate import bootstrap, pgr
    from pipelines.joint_annotate import joint_stage

    ev = cfg.root / "eval"
    weak = joint_stage(cfg.root / "data" / "test", ev / "weak_joint", cfg.weak.models, cfg.joint, cfg.cluster, log)
    joint_rows = pq.read_table(ev / "weak_joint" / "joint_labels.parquet").to_pylist()
    refs = [r["reference"] for r in joint_rows]
    ids = [r["id"] for r in joint_rows]
    result = {"weak joint": scores([r["target"] for r in joint_rows], refs)}
    for i, m in enumerate(cfg.weak.models):
        result[f"weak {m.name}"] = scores([r["weak_top"][i] for r in joint_rows], refs)
    per_row = {n: s["rows"] for n, s in result.items()}
    for name, spec in eval_targets(cfg).items():
        t = generate_stage(cfg.root / "data" / "test", ev / name.replace(" ", "_"), spec, cfg, log)
        result[name] = scores(t["answer"].to_pylist(), t["reference"].to_pylist())
        by_id = dict(zip(t["id"].to_pylist(), result[name]["rows"]))
        per_row[name] = np.array([by_id[i] for i in ids])  # the joint rows' order: paired resamples
    f1 = {n: s["f1"] for n, s in result.items()}
    w2s = [n for n in f1 if n.startswith("w2s ")]
    zs = "strong zero-shot" if "strong zero-shot" in f1 else None
    return {"metric": "token F1", "accuracy": f1, "em": {n: s["em"] for n, s in result.items()},
            "supervisor": "weak joint", "ceiling": "strong ceiling", "rows": len(joint_rows), "weak_seconds": weak["seconds"],
            "pgr": {n: pgr(f1[n], f1["weak joint"], f1["strong ceiling"]) for n in w2s}, "blind_spot": {},
            "zero_shot": zs, "gain": {n: f1[n] - f1[zs] for n in w2s} if zs else {},
            "below_zero_shot": [n for n in w2s if zs and f1[n] < f1[zs]],
            # the same paired bootstrap as choice tasks, over each test row's token F1
            "intervals": bootstrap(per_row, "weak joint", "strong ceiling", zs, w2s)}

