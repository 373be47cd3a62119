"""SEAM annotation throughput: the batched stage vs a row-at-a-time loop, same rows, same models.

    .venv/bin/python benchmarks/seam_throughput.py --rows 16 --max-depth 2 --new-tokens 32 --batch-rows 16
    .venv/bin/python benchmarks/seam_throughput.py --smoke --out /tmp/x   # tiny random models, 2 rows, seconds

Both runs are `pipelines.seam_annotate.seam_stage` on the same PIQA preference rows (seed 0) with
the strong Gemma-3-270M and the weak SmolLM2-135M-Instruct in their own actors:
  batched        Ray Data batches of --batch-rows rows, 2 in flight; every search phase is ONE
                 actor call for all of a batch's active rows (pipelines/seam.py `search`);
  row-at-a-time  batches of 1 row, 1 in flight: `search` with one row per call, so every request
                 is its own actor call (the loop a per-row implementation makes).
Reported per run: rows/s (after the actors are up), strong-model forward calls per row (counted
by a forward pre-hook inside the strong actor: one per micro-batch of a scoring call, one per
decoding step of a generation), strong actor calls per row, and whether the two runs gave the same
weak labels. Prints a Markdown table and writes it to --out/seam_throughput.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STRONG, WEAK = "embedded:gemma3-270m", "embedded:smollm2-135m-instruct"
TEMPLATE = {"template": "{prompt}\nSolutions: {options}\nAnswer:", "option_line": "{option}", "option_sep": " | ",
            "answer": "text"}
# tiny random models (strong gemma3, weak llama), 2 rows, one search level, 4 new tokens per thought
SMOKE = {"strong": "tiny:gemma3:1", "weak": "tiny:llama:1", "rows": 2, "max_depth": 1, "new_tokens": 4,
         "batch_rows": 2, "threads": 1}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--max-depth", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=32, help="seam.thought_max_new_tokens")
    ap.add_argument("--batch-rows", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each model actor")
    ap.add_argument("--strong", default=STRONG)
    ap.add_argument("--weak", default=WEAK)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--smoke", action="store_true", help=f"tiny sizes, seconds: {SMOKE}")
    args = ap.parse_args()
    if args.smoke:
        for k, v in SMOKE.items():
            setattr(args, k, v)
    from benchmarks.machine import cpu_line, load_line

    cpu, load_at_start = cpu_line(), load_line()
    print(f"machine: {cpu}; {load_at_start}", flush=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import logging

    import pyarrow.parquet as pq
    import ray

    from actors.backend import BackendConfig
    from actors.model_config import ModelConfig
    from cluster.config import ClusterConfig
    from pipelines.data import DataConfig, prepare_data
    from actors.prompts import TemplateConfig
    from pipelines.seam import SeamConfig
    from pipelines.seam_annotate import LABELS_FILE, SeamStageConfig, seam_stage

    work = Path(tempfile.mkdtemp(prefix="seam_bench_"))
    prepare_data(DataConfig(source="embedded:piqa_pairs", weak_train=0, held_out=args.rows, test=0, seed=0,
                            shard_rows=args.rows, max_prompt_chars=300), work / "data", print)
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False)
    backend = BackendConfig(threads=args.threads)
    cfg = SeamConfig(max_depth=args.max_depth, thought_max_new_tokens=args.new_tokens)
    template = TemplateConfig(**TEMPLATE)
    cluster = ClusterConfig(num_cpus=2)
    weak = ModelConfig(spec=args.weak, name="weak", backend=backend)
    runs = {"batched": SeamStageConfig(batch_rows=args.batch_rows, max_in_flight=2, auxconf_threshold=0.6),
            "row-at-a-time": SeamStageConfig(batch_rows=1, max_in_flight=1, auxconf_threshold=0.6)}
    results, labels = {}, {}
    for name, stage in runs.items():
        out = work / name
        t = time.time()
        s = seam_stage(work / "data" / "held_out", out, cfg, args.strong, backend, weak, template, cluster, print,
                       stage)
        s["wall"] = time.time() - t
        results[name] = s
        labels[name] = pq.read_table(out / LABELS_FILE, columns=["id", "weak_label", "weak_probs", "tree"]).to_pylist()
    ray.shutdown()

    b, r = results["batched"], results["row-at-a-time"]
    same_labels = sum(x["weak_label"] == y["weak_label"] for x, y in zip(labels["batched"], labels["row-at-a-time"]))
    pairs = [(json.loads(x["tree"]), json.loads(y["tree"])) for x, y in zip(labels["batched"], labels["row-at-a-time"])]
    same_chains = sum([n["chain"] for n in x] == [n["chain"] for n in y] for x, y in pairs)
    same_thoughts = sum([n["thought"] for n in x] == [n["thought"] for n in y] for x, y in pairs)
    prob_diff = max(abs(a - b) for x, y in zip(labels["batched"], labels["row-at-a-time"])
                    for a, b in zip(x["weak_probs"], y["weak_probs"]))
    head = ("| run | rows | batch rows | s | rows/s | strong forward calls / row | strong actor calls / row "
            "| weak forward calls / row | actor calls per batch (search) | x row-at-a-time |")
    lines = [head, "|" + "---|" * 10]
    for name, s in results.items():
        calls = s["expand_calls_per_batch"]
        lines.append(f"| {name} | {s['rows']} | {runs[name].batch_rows} | {s['seconds']:.1f} | {s['rows_per_s']:.3f} "
                     f"| {s['strong_forwards_per_row']:.1f} | {s['strong_calls_per_row']:.2f} "
                     f"| {s['weak_forwards_per_row']:.1f} | {min(calls)}-{max(calls)} "
                     f"| {s['rows_per_s'] / r['rows_per_s']:.2f} |")
    table = "\n".join(lines)
    cmd = (f".venv/bin/python benchmarks/seam_throughput.py --rows {args.rows} --max-depth {args.max_depth} "
           f"--new-tokens {args.new_tokens} --batch-rows {args.batch_rows} --threads {args.threads}"
           + (f" --strong {args.strong} --weak {args.weak}" if (args.strong, args.weak) != (STRONG, WEAK) else ""))
    note = (f"- Machine: {cpu}; {load_at_start} at the start, {load_line()} at the end; torch {args.threads} "
            f"thread(s) per model actor, bf16 where supported.\n"
            f"- Strong {args.strong}, weak {args.weak}; {args.rows} PIQA preference rows (held-out, seed 0); "
            f"SEAM max_depth {args.max_depth}, {args.new_tokens} new tokens per thought, greedy.\n"
            f"- Seconds: from actors ready to the last row written (model loading excluded). Strong forward calls: "
            f"counted in the strong actor (one per micro-batch of a scoring call, one per decoding step of a generation).\n"
            f"- Batched vs row-at-a-time on the same rows: same weak label {same_labels}/{b['rows']}, same FF-tree "
            f"principle chains {same_chains}/{b['rows']}, same thought texts {same_thoughts}/{b['rows']}, largest "
            f"weak-probability difference {prob_diff:.4f} (bf16 with left padding: batch composition moves the "
            f"numbers a little and can change a greedy token).")
    text = (f"# SEAM annotation throughput\n\n    {cmd}\n\n{note}\n\n{table}\n\n"
            "`x row-at-a-time`: rows/s over the row-at-a-time run's. `actor calls per batch (search)`: the "
            "expand calls of `search` per Ray Data batch (min-max over batches), without the two baseline calls.\n")
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "seam_throughput.md").write_text(text)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
