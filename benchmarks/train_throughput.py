"""Training throughput of the 135M model: tokens/s and model FLOP utilization (MFU).

    .venv/bin/python benchmarks/train_throughput.py [--steps 12] [--micro-batch 8] [--out benchmarks/results]

Same batches (CommonsenseQA ground truth, SmolLM2-135M-Instruct, label answers) through:
  plain     a single-process PyTorch loop: fp32, full-sequence logits, torch AdamW defaults;
  loop      training/sft_trainer.py's train_loop in this process (bf16 autocast, answer-position logits,
            fused AdamW), engine torch and engine deepspeed (ZeRO-2);
  ray       the same loop on Ray Train (1 worker, DeepSpeed ZeRO-2), timed from its step log.
Training FLOPs per token: 6 x non-embedding params + 12 x layers x seq_len x hidden (PaLM's
convention: forward + backward), plus the output projection at the answer position per row.
The first 2 steps are warm-up and not timed. Prints a Markdown table, writes it and a PNG to --out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPEC = "embedded:smollm2-135m-instruct"
WARMUP = 2


def make_job(out: str, steps: int, micro_batch: int, engine: str):
    from pipelines.data import DataConfig, read_source, split_rows
    from actors.prompts import TemplateConfig
    from training.examples import ground_truth_examples
    from training.sft_config import TrainConfig
    from training.sft_trainer import TrainJob

    cfg = DataConfig(source="embedded:csqa", weak_train=steps * micro_batch, held_out=0, test=0)
    rows = split_rows(read_source(cfg), cfg)["weak_train"]
    ex = ground_truth_examples(rows, TemplateConfig())
    train = TrainConfig(engine=engine, zero_stage=2, lr=1e-5, max_steps=steps, micro_batch=micro_batch,
                        max_length=256, cpus_per_worker=2)
    return TrainJob(name=Path(out).name, spec=SPEC, out_dir=out, train=train, examples=ex, num_options=5)


def timed_history(out: str) -> tuple[float, int]:
    from training.sft_trainer import read_history

    h = read_history(out)[WARMUP - 1:]
    return h[-1]["seconds"] - h[0]["seconds"], sum(x["tokens"] for x in h[1:])


def plain_loop(job) -> tuple[float, int]:
    """fp32, full logits, default AdamW; same batches as train_loop (step_indices)."""
    from actors.registry import load_model
    from training.sft_trainer import collate, step_indices

    model, tok = load_model(SPEC, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=job.train.lr)
    cache: dict = {}
    t0, tokens = None, 0
    for step in range(job.train.max_steps):
        if step == WARMUP:
            t0 = time.perf_counter()
        idx = step_indices(len(job.examples), step, job.train.micro_batch, job.train.seed)
        batch = collate([job.examples[i] for i in idx], tok, cache, job, "cpu")
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, -1]
        target = batch["label_ids"].gather(1, batch["target"].unsqueeze(1)).squeeze(1)
        loss = torch.nn.functional.cross_entropy(logits, target)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step >= WARMUP:
            tokens += int(batch["attention_mask"].sum())
    return time.perf_counter() - t0, tokens


def train_flops(tokens: int, rows: int, arch: dict, non_embed: int, seq: float) -> float:
    return (6 * non_embed * tokens + 12 * arch["num_hidden_layers"] * seq * arch["hidden_size"] * tokens
            + 6 * arch["hidden_size"] * arch["vocab_size"] * rows)


def main():
    from cluster.config import MALLOC_ENV

    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    from score_throughput import matmul_peak

    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"matmul peak: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s", flush=True)
    from actors.registry import load_model
    from training.sft_trainer import fit, fit_local

    m, _ = load_model(SPEC)
    arch = {k: getattr(m.config, k) for k in ("num_hidden_layers", "hidden_size", "vocab_size")}
    non_embed = sum(p.numel() for p in m.parameters()) - m.get_input_embeddings().weight.numel()
    del m
    work = Path(tempfile.mkdtemp(prefix="w2s-train-bench-"))
    results = []
    timed_rows = (args.steps - WARMUP) * args.micro_batch
    try:
        job = make_job(str(work / "plain"), args.steps, args.micro_batch, "torch")
        secs, toks = plain_loop(job)
        results.append(("plain PyTorch loop: fp32, full logits, AdamW default", secs, toks))
        print(f"plain: {toks / secs:.0f} tokens/s", flush=True)
        for engine in ("torch", "deepspeed"):
            job = make_job(str(work / f"loop_{engine}"), args.steps, args.micro_batch, engine)
            fit_local(job, lambda s: None)
            secs, toks = timed_history(job.out_dir)
            results.append((f"train_loop in-process, engine {engine}", secs, toks))
            print(f"loop {engine}: {toks / secs:.0f} tokens/s", flush=True)
        import ray

        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        job = make_job(str(work / "ray"), args.steps, args.micro_batch, "deepspeed")
        fit(job, lambda s: None)
        secs, toks = timed_history(job.out_dir)
        results.append(("Ray Train, 1 worker, DeepSpeed ZeRO-2", secs, toks))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results[0][2] / results[0][1]
    seq = results[0][2] / timed_rows
    lines = [f"SmolLM2-135M-Instruct, CSQA rows (mean {seq:.0f} tokens), micro-batch {args.micro_batch}, "
             f"{args.steps - WARMUP} timed steps; matmul peak fp32 {peak32:.0f} / bf16 {peak16:.0f} GFLOP/s.", "",
             "| what | tokens/s | s/step | model GFLOP/s | MFU vs bf16 peak | MFU vs fp32 peak | x plain |",
             "|---|---|---|---|---|---|---|"]
    for name, secs, toks in results:
        gfs = train_flops(toks, timed_rows, arch, non_embed, seq) / secs / 1e9
        lines.append(f"| {name} | {toks / secs:.0f} | {secs / (args.steps - WARMUP):.2f} | {gfs:.0f} | "
                     f"{gfs / peak16:.1%} | {gfs / peak32:.1%} | {toks / secs / base:.2f} |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_throughput.md").write_text(table + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    ax.barh(range(len(results)), [t / s for _, s, t in results])
    ax.set_yticks(range(len(results)), [r[0] for r in results], fontsize=7)
    ax.set_xlabel("training tokens/s")
    fig.tight_layout()
    fig.savefig(out / "train_throughput.png", dpi=120)


if __name__ == "__main__":
    main()
