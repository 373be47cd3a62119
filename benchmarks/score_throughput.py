"""Weak-model scoring throughput: rows/s, tokens/s and model FLOP utilization (MFU).

    .venv/bin/python benchmarks/score_throughput.py [--rows 96] [--models 1,2,4] [--out benchmarks/results]

Measures, on the same BoolQ held-out rows and prompts:
  peak      2048x2048 matmul GFLOP/s in fp32 and bf16 on this machine (the MFU denominators);
  baseline  a plain single-process Hugging Face loop: batch 1, fp32, full-sequence logits;
  backend   the HF backend in-process (bf16 where supported, length buckets, answer-position
            logits only): the scoring forward whose MFU the target is set for;
  stage     the annotation stage (Ray Data + weak actors in a placement group) with 1, 2, 4
            weak models (copies of SmolLM2-135M-Instruct), and 1 model on 2x the rows.
Model FLOPs count useful (unpadded) tokens: 2 * non-embedding params per token, plus attention
4 * layers * seq_len * hidden per token (PaLM's MFU convention), plus the answer-position output
projection per row. The stage rows count every weak model's FLOPs.
Prints a Markdown table and writes it with a PNG plot to --out.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPEC = "embedded:smollm2-135m-instruct"
TEMPLATE = {"template": "{prompt}\n{options}\nAnswer:"}


def matmul_peak(dtype, n=2048, reps=20) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    return best / 1e9


def model_flops(cfg: dict, non_embed: int, lengths: list[int], vocab_rows: int) -> float:
    per_token = 2 * non_embed
    # PaLM's convention: attention 4 * layers * seq_len * hidden per token, no causal halving
    attn = sum(4 * cfg["num_hidden_layers"] * L * L * cfg["hidden_size"] for L in lengths)
    return per_token * sum(lengths) + attn + 2 * cfg["hidden_size"] * vocab_rows


def prompts(rows: int):
    from pipelines.data import DataConfig, read_source, split_rows
    from actors.prompts import TemplateConfig, render

    # the same rows as the stage's data split (bench_stage)
    cfg = DataConfig(source="embedded:boolq", weak_train=500, held_out=rows, test=0, max_prompt_chars=1200)
    held = split_rows(read_source(cfg), cfg)["held_out"]
    tcfg = TemplateConfig(**TEMPLATE)
    texts, labels = zip(*[render(r["prompt"], r["options"], (0, 1), tcfg) for r in held])
    return held, list(texts), [list(lb) for lb in labels]


def bench_baseline(texts, labels, threads):
    from actors.registry import load_model

    torch.set_num_threads(threads)
    model, tok = load_model(SPEC, dtype=torch.float32)
    model.eval()
    lab = [[tok.encode(x, add_special_tokens=False)[0] for x in row] for row in labels]
    t = time.perf_counter()
    n_tok = 0
    with torch.no_grad():
        for text, ids in zip(texts, lab):
            enc = tok(text, return_tensors="pt").input_ids[:, -1024:]
            logits = model(enc).logits  # full-sequence logits
            torch.softmax(logits[0, -1, ids], -1)
            n_tok += enc.shape[1]
    return time.perf_counter() - t, n_tok


def bench_backend(texts, labels, threads, dtype="auto", compile=False, max_batch_tokens=4096):
    from actors.backend import BackendConfig
    from actors.hf_backend import HFBackend

    b = HFBackend(SPEC, BackendConfig(dtype=dtype, threads=threads, max_batch_tokens=max_batch_tokens,
                                      compile=compile))
    for _ in range(2):  # warm-up: the one-time compile, then the recompiles new shapes trigger
        t = time.perf_counter()
        b.score_options(texts, labels)
        print(f"  warm-up pass {time.perf_counter() - t:.1f} s", flush=True)
    b.tokens_seen = 0
    t = time.perf_counter()
    b.score_options(texts, labels)
    return time.perf_counter() - t, b.tokens_seen, b.info()


def bench_stage(n_models: int, rows: int, workdir: Path):
    """The annotation stage end to end; returns (seconds of streaming, tokens, rows)."""
    from cluster.loader import load_config
    from pipelines.run import RunConfig, run

    root = Path(__file__).resolve().parents[1]
    over = [f"run_dir={workdir / f'm{n_models}_r{rows}'}", "data.source=embedded:boolq", f"data.held_out={rows}",
            "data.weak_train=500", "data.test=0", "data.shard_rows=16", "data.max_prompt_chars=1200",
            "annotate.method=ensemble", "annotate.batch_rows=32", f"annotate.max_in_flight={max(2, n_models)}",
            f"template.template={json.dumps(TEMPLATE['template'])}", "template.chat=false",
            "template.label_prefix=' '"]
    for i in range(n_models):
        over += [f"weak.models.{i}.spec={SPEC}", f"weak.models.{i}.name=smollm2_{i}"]
    cfg = load_config(RunConfig, root / "configs" / "quickstart.yaml", over)
    m = run(cfg, lambda s: None, until="weak_labels")["stages"]["weak_labels"]
    return m["seconds"], m["tokens"], m["rows"]


def main():
    from cluster.config import MALLOC_ENV

    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        # the in-process backend runs need the same allocator settings the actors get
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--models", default="1,2,4")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--skip-stage", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"matmul peak on {args.threads} threads: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s", flush=True)

    held, texts, labels = prompts(args.rows)
    from actors.registry import load_tokenizer

    tok = load_tokenizer(SPEC)
    lengths = [len(x) for x in tok(texts)["input_ids"]]
    results = []

    secs, b_tok, info = bench_backend(texts, labels, args.threads)
    arch, non_embed = info["config"], info["non_embedding_params"]
    fl = model_flops(arch, non_embed, lengths, len(texts) * 2)
    results.append(("backend bf16, buckets, answer-position logits", len(texts), secs, b_tok, fl,
                    info["dtype"]))
    print(f"backend: {len(texts) / secs:.1f} rows/s, MFU bf16 {fl / secs / 1e9 / peak16:.1%}", flush=True)
    secs_c, c_tok, _ = bench_backend(texts, labels, args.threads, compile=True)
    results.append(("backend bf16 + torch.compile", len(texts), secs_c, c_tok, fl, info["dtype"]))
    print(f"backend compiled: {len(texts) / secs_c:.1f} rows/s, MFU bf16 {fl / secs_c / 1e9 / peak16:.1%}", flush=True)
    secs32, t32, _ = bench_backend(texts, labels, args.threads, dtype="float32")
    results.append(("backend fp32, buckets, answer-position logits", len(texts), secs32, t32, fl, "float32"))

    base_secs, base_tok = bench_baseline(texts, labels, args.threads)
    results.append(("baseline: HF loop, batch 1, fp32, full logits", len(texts), base_secs, base_tok, fl, "float32"))
    print(f"baseline: {len(texts) / base_secs:.1f} rows/s", flush=True)

    stage_rows = []
    if not args.skip_stage:
        from cluster.config import ClusterConfig
        from cluster.connect import connect

        # declare the largest plan's logical GPUs up front: a local cluster cannot grow later
        connect(ClusterConfig(num_cpus=os.cpu_count()), max(int(x) for x in args.models.split(",")))
        work = Path(tempfile.mkdtemp(prefix="w2s-bench-"))
        try:
            for n in [int(x) for x in args.models.split(",")]:
                s, tk, r = bench_stage(n, args.rows, work)
                stage_rows.append((n, r, s, tk))
                results.append((f"stage: {n} weak model(s)", r, s, tk, fl * n, "bfloat16"))
                print(f"stage {n} models: {r / s:.1f} rows/s", flush=True)
            s, tk, r = bench_stage(1, args.rows * 2, work)
            results.append(("stage: 1 weak model, 2x rows", r, s, tk, 2 * fl, "bfloat16"))
            stage_rows.append((1, r, s, tk))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    table = render_table(results, peak32, peak16, base_secs / len(texts), args)
    print(table)
    (out / "score_throughput.md").write_text(table + "\n")
    plot(results, stage_rows, out / "score_throughput.png")


def render_table(results, peak32, peak16, base_s_per_row, args) -> str:
    lines = [f"Machine: {os.cpu_count()} cores, {args.threads} threads; matmul peak fp32 {peak32:.0f} GFLOP/s, "
             f"bf16 {peak16:.0f} GFLOP/s (2048^2). Rows: BoolQ held-out, {args.rows} rows, K=2.", "",
             "| what | rows | s | rows/s | tokens/s | model GFLOP/s | MFU vs bf16 peak | MFU vs fp32 peak | x baseline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, rows, secs, toks, fl, _ in results:
        gfs = fl / secs / 1e9
        lines.append(f"| {name} | {rows} | {secs:.1f} | {rows / secs:.2f} | {toks / secs:.0f} | {gfs:.0f} | "
                     f"{gfs / peak16:.1%} | {gfs / peak32:.1%} | {base_s_per_row * rows / secs:.1f} |")
    return "\n".join(lines)


def plot(results, stage_rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].barh(range(len(results)), [r[1] / r[2] for r in results])
    axes[0].set_yticks(range(len(results)), [r[0] for r in results], fontsize=7)
    axes[0].set_xlabel("rows/s (row = one prompt scored by every weak model)")
    if stage_rows:
        xs = [n * r for n, r, _, _ in stage_rows]
        axes[1].plot(xs, [s for _, _, s, _ in stage_rows], "o")
        for n, r, s, _ in stage_rows:
            axes[1].annotate(f"{n} model(s), {r} rows", (n * r, s), fontsize=7)
        axes[1].set_xlabel("model-rows (weak models x rows)")
        axes[1].set_ylabel("stage seconds")
        axes[1].set_title("annotation cost vs work")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
