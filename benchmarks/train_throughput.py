"""Training throughput: tokens/s and model FLOP utilization (MFU).

    .venv/bin/python benchmarks/train_throughput.py [--steps 12] [--micro-batch 8] [--text-steps 12] [--repeats 1] \
        [--text-models embedded:smollm2-135m-instruct,embedded:gemma3-270m] [--out benchmarks/results]
    .venv/bin/python benchmarks/train_throughput.py --smoke --out /tmp/x   # tiny models, 2 steps, seconds

Label answers: the same batches (CommonsenseQA ground truth, SmolLM2-135M-Instruct, one label token
per option) through
  plain     a single-process PyTorch loop: fp32, full-sequence logits, torch AdamW defaults;
  loop      training/sft_trainer.py's train_loop in this process (bf16 autocast, answer-position logits,
            fused AdamW), engine torch and engine deepspeed (ZeRO-2);
  ray       the same loop on Ray Train (1 worker with every CPU), engine torch and engine deepspeed
            (ZeRO-2), timed from its step log; "x in-process" is its tokens/s over the same engine's
            in-process loop, and the job's start-up + model saving (the job's wall time less its
            step log's span) is printed beside it; once per worker allocator of --ray-allocators
            (OptimConfig.allocator set to jemalloc or glibc, not auto; cluster.config says why).
  --repeats N runs the in-process and Ray rows N times, alternated (this machine's speed drifts by
            10-15% between runs of the same loop): tokens/s pooled over the repeats, "x in-process"
            and the start-up as the median (range) of the per-repeat figures.
  Training FLOPs per token: 6 x non-embedding params + 12 x layers x seq_len x hidden (PaLM's
  convention: forward + backward), plus the output projection at the answer position per row.
Answer text (the quickstart's strong training: configs/quickstart.yaml's template with answer: text,
lm_normalize options, CSQA K = 5), per model of --text-models, train_loop in-process, engine torch,
train.shared_prompt off (K prompt + option sequences per row) and on (one packed sequence per row,
actors/packing.py), same batches, same initial weights:
  useful tokens  each row's prompt once plus each of its options' tokens (the packed row's length,
                 the same count for both paths), so useful tokens/s is comparable across the paths;
  tokens run     the real (unpadded) tokens the forward ran (history.jsonl's `tokens`): the K-sequence
                 path runs the prompt K times;
  FLOPs          each path's own work, padding excluded: 3 x (2 x non-embedding params per token run +
                 4 x layers x L x hidden per token, L the length of the sequence it is in (a packed
                 row's attention is dense under its block mask) + 2 x hidden x vocab per logit position
                 kept: |y_k| + 1 per K-sequence, sum_k |y_k| + 1 per packed row).
The first --warmup steps are not timed. Prints Markdown tables with the CPU line, writes them and a
PNG to --out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEC = "embedded:smollm2-135m-instruct"
TEXT_MODELS = "embedded:smollm2-135m-instruct,embedded:gemma3-270m"
SMOKE = {"spec": "tiny:llama:1", "text_models": "tiny:llama:1,tiny:gemma3:1", "steps": 2, "text_steps": 2,
         "warmup": 1, "micro_batch": 4}


def make_job(out: str, steps: int, micro_batch: int, engine: str, spec: str = SPEC):
    from pipelines.data import DataConfig, read_source, split_rows
    from actors.prompts import TemplateConfig
    from training.examples import ground_truth_examples
    from training.sft_config import TrainConfig
    from training.sft_trainer import TrainJob

    cfg = DataConfig(source="embedded:csqa", weak_train=steps * micro_batch, held_out=0, test=0)
    rows = split_rows(read_source(cfg), cfg)["weak_train"]
    ex = ground_truth_examples(rows, TemplateConfig())
    train = TrainConfig(engine=engine, zero_stage=2, lr=1e-5, max_steps=steps, micro_batch=micro_batch,
                        max_length=256, cpus_per_worker=2, checkpoint_at_end=False)
    return TrainJob(name=Path(out).name, spec=spec, out_dir=out, train=train, examples=ex, num_options=5)


def make_text_job(out: str, steps: int, micro_batch: int, spec: str, shared: bool):
    """The quickstart's strong training in miniature: answer text, lm_normalize options."""
    from pipelines.data import DataConfig, read_source, split_rows
    from score_throughput import text_template
    from training.examples import ground_truth_examples
    from training.sft_config import TrainConfig
    from training.sft_trainer import TrainJob

    tcfg = text_template()
    cfg = DataConfig(source="embedded:csqa", weak_train=steps * micro_batch, held_out=0, test=0)
    rows = split_rows(read_source(cfg), cfg)["weak_train"]
    train = TrainConfig(engine="torch", lr=1e-5, max_steps=steps, micro_batch=micro_batch, max_length=256,
                        lm_normalize="options", shared_prompt=shared, checkpoint_at_end=False)
    return TrainJob(name=Path(out).name, spec=spec, out_dir=out, train=train,
                    examples=ground_truth_examples(rows, tcfg), answer=tcfg.answer, chat=tcfg.chat, num_options=5)


def timed_history(out: str, warmup: int) -> tuple[float, int]:
    """(seconds, tokens) of the steps after the first `warmup`, from history.jsonl."""
    from training.sft_trainer import read_history

    h = read_history(out)[warmup - 1:]
    return h[-1]["seconds"] - h[0]["seconds"], sum(x["tokens"] for x in h[1:])


def plain_loop(job, warmup: int) -> tuple[float, int]:
    """fp32, full logits, default AdamW; same batches as train_loop (step_indices)."""
    from actors.registry import load_model
    from training.sft_trainer import collate, step_indices

    model, tok = load_model(job.spec, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=job.train.lr)
    cache: dict = {}
    t0, tokens = None, 0
    for step in range(job.train.max_steps):
        if step == warmup:
            t0 = time.perf_counter()
        idx = step_indices(len(job.examples), step, job.train.micro_batch, job.train.seed)
        batch = collate([job.examples[i] for i in idx], tok, cache, job, "cpu")
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, -1]
        target = batch["label_ids"].gather(1, batch["target"].unsqueeze(1)).squeeze(1)
        loss = torch.nn.functional.cross_entropy(logits, target)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step >= warmup:
            tokens += int(batch["attention_mask"].sum())
    return time.perf_counter() - t0, tokens


def train_flops(tokens: int, rows: int, arch: dict, non_embed: int, seq: float) -> float:
    return (6 * non_embed * tokens + 12 * arch["num_hidden_layers"] * seq * arch["hidden_size"] * tokens
            + 6 * arch["hidden_size"] * arch["vocab_size"] * rows)


def text_step_shapes(job, tok, warmup: int) -> dict:
    """Over the timed steps of an answer-text job: useful tokens (prompt once + options), and per
    path the unpadded sequence lengths and logit positions kept, tokenised as training.sft_trainer's
    collate does (prompt cut to max_length minus the batch's longest option, both paths)."""
    from actors.backend import encode_prompts
    from training.sft_trainer import step_indices

    t = job.train
    out = {"useful": 0, "k_lengths": [], "k_heads": 0, "p_lengths": [], "p_heads": 0}
    for step in range(warmup, t.max_steps):
        batch = [job.examples[i] for i in step_indices(len(job.examples), step, t.micro_batch, t.seed)]
        opts = [tok(e["labels"], add_special_tokens=False)["input_ids"] for e in batch]
        longest = max(len(c) for row in opts for c in row)
        prompts = encode_prompts(tok, [e["text"] for e in batch], job.chat, t.max_length - longest)
        for p, row in zip(prompts, opts):
            total = len(p) + sum(len(c) for c in row)
            out["useful"] += total
            out["p_lengths"].append(total)
            out["p_heads"] += sum(len(c) for c in row) + 1
            out["k_lengths"] += [len(p) + len(c) for c in row]
            out["k_heads"] += sum(len(c) + 1 for c in row)
    return out


def forward_flops(arch: dict, non_embed: int, lengths: list[int], heads: int) -> float:
    attn = sum(4 * arch["num_hidden_layers"] * L * L * arch["hidden_size"] for L in lengths)
    return (2 * non_embed * sum(lengths) + attn
            + 2 * arch["hidden_size"] * arch["vocab_size"] * heads)


def model_arch(spec: str) -> tuple[dict, int]:
    from actors.registry import load_model

    m, _ = load_model(spec)
    arch = {k: getattr(m.config, k) for k in ("num_hidden_layers", "hidden_size", "vocab_size")}
    non_embed = sum(p.numel() for p in m.parameters()) - m.get_input_embeddings().weight.numel()
    return arch, non_embed


def bench_text(args, work: Path) -> list[dict]:
    """Answer-text rows: per model, shared_prompt off then on, same batches."""
    from actors.packing import supports_packing
    from actors.registry import load_model, load_tokenizer
    from training.sft_trainer import fit_local, read_history

    out = []
    timed = args.text_steps - args.warmup
    for spec in args.text_models.split(","):
        arch, non_embed = model_arch(spec)
        m, _ = load_model(spec)
        can_pack = supports_packing(m)
        del m
        ref = None
        for shared in (False, True):
            job = make_text_job(str(work / f"text_{spec.replace(':', '_')}_{shared}"), args.text_steps,
                                args.micro_batch, spec, shared)
            fit_local(job, lambda s: None)
            secs, run_tokens = timed_history(job.out_dir, args.warmup)
            hist = read_history(job.out_dir)
            shapes = text_step_shapes(job, load_tokenizer(spec), args.warmup)
            packed = shared and can_pack
            lengths, heads = ((shapes["p_lengths"], shapes["p_heads"]) if packed
                              else (shapes["k_lengths"], shapes["k_heads"]))
            if run_tokens != sum(lengths):
                print(f"  note: the loop counted {run_tokens} tokens, the FLOP count's tokenisation {sum(lengths)}")
            row = {"spec": spec, "path": "shared prompt (packed)" if packed else
                   ("K sequences" if not shared else "shared prompt requested, NOT packed"),
                   "secs": secs, "steps": timed, "useful": shapes["useful"], "run": run_tokens,
                   "flops": 3 * forward_flops(arch, non_embed, lengths, heads), "loss1": hist[0]["loss"],
                   "loss_last": hist[-1]["loss"]}
            ref = ref or row
            row["speedup"] = ref["secs"] / secs
            out.append(row)
            print(f"text {spec} {row['path']}: {row['useful'] / secs:.0f} useful tokens/s, {secs / timed:.2f} s/step, "
                  f"x{row['speedup']:.2f}, loss step 1 {row['loss1']:.4f}", flush=True)
    return out


def main():
    from cluster.config import MALLOC_ENV

    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="steps of each label-answer run (warm-up included)")
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2, help="untimed first steps of every run")
    ap.add_argument("--spec", default=SPEC, help="model of the label-answer rows")
    ap.add_argument("--text-models", default=TEXT_MODELS, help="comma-separated specs of the answer-text rows")
    ap.add_argument("--text-steps", type=int, default=12, help="steps of each answer-text run (0: no text rows)")
    ap.add_argument("--skip-labels", action="store_true", help="answer-text rows only")
    ap.add_argument("--skip-ray", action="store_true", help="no Ray Train row")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of each in-process and Ray Train row, alternated; tokens/s pooled, ratios per repeat")
    ap.add_argument("--ray-allocators", default="jemalloc,glibc",
                    help="Ray Train rows per worker allocator (OptimConfig.allocator): comma-separated of jemalloc, glibc, auto")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--smoke", action="store_true", help=f"tiny random models, 2 steps, seconds: {SMOKE}")
    args = ap.parse_args()
    if args.smoke:
        for k, v in SMOKE.items():
            setattr(args, k, v)
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    if min(args.steps, args.text_steps or args.warmup + 1) <= args.warmup or args.warmup < 1:
        raise SystemExit("--steps and --text-steps must exceed --warmup (>= 1): the timed span starts after it")
    torch.set_num_threads(os.cpu_count())
    from benchmarks.machine import cpu_line, load_line
    from score_throughput import matmul_peak
    from training.optim_config import resolve_precision

    cpu, load_at_start, prec = cpu_line(), load_line(), resolve_precision("auto", "cpu")
    print(f"machine: {cpu}; {load_at_start}", flush=True)
    n_peak = 256 if args.smoke else 2048
    peak32, peak16 = matmul_peak(torch.float32, n_peak), matmul_peak(torch.bfloat16, n_peak)
    print(f"matmul peak: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s; the loop's precision (auto): {prec}",
          flush=True)
    work = Path(tempfile.mkdtemp(prefix="w2s-train-bench-"))
    results, text = [], []
    try:
        if not args.skip_labels:
            results = bench_labels(args, work)
        if args.text_steps and args.text_models:
            text = bench_text(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    parts = [f"Machine: {cpu}; matmul peak fp32 {peak32:.0f} / bf16 {peak16:.0f} GFLOP/s ({n_peak}^2); `precision: auto` "
             f"resolved to {prec}; {load_at_start} at the start, {load_line()} at the end.", "",
             f"Command: `.venv/bin/python {' '.join(['benchmarks/train_throughput.py'] + sys.argv[1:])}`"]
    if results:
        parts += ["", label_table(results, args, peak32, peak16)]
    if text:
        parts += ["", text_table(text, args, peak16 if prec == "bf16" else peak32, prec)]
    table = "\n".join(parts)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_throughput.md").write_text(table + "\n")
    plot(results, text, out / "train_throughput.png")


def read_history_span(out: str) -> float:
    """Seconds from the loop's start to its last step (history.jsonl's cumulative `seconds`)."""
    from training.sft_trainer import read_history

    return read_history(out)[-1]["seconds"]


def bench_labels(args, work: Path) -> list:
    """The label-answer rows. With --repeats > 1 every in-process and Ray Train row runs once per
    repeat, in-process first; each Ray row's ratio is taken against the same repeat's in-process
    loop, so a drift of the machine between repeats cancels out of the ratio."""
    from training.sft_trainer import fit_local

    results = []
    job = make_job(str(work / "plain"), args.steps, args.micro_batch, "torch", args.spec)
    secs, toks = plain_loop(job, args.warmup)
    results.append(("plain PyTorch loop: fp32, full logits, AdamW default", secs, toks))
    print(f"plain: {toks / secs:.0f} tokens/s", flush=True)
    runs: dict[str, list[tuple[float, int]]] = {}
    for rep in range(args.repeats):
        local = {}
        for engine in ("torch", "deepspeed"):
            job = make_job(str(work / f"loop_{engine}_{rep}"), args.steps, args.micro_batch, engine, args.spec)
            fit_local(job, lambda s: None)
            secs, toks = timed_history(job.out_dir, args.warmup)
            runs.setdefault(f"train_loop in-process, engine {engine}", []).append((secs, toks))
            local[engine] = toks / secs
            print(f"repeat {rep + 1}/{args.repeats}: loop {engine}: {toks / secs:.0f} tokens/s", flush=True)
        if not args.skip_ray:
            bench_ray(args, work, rep, local, runs)
    return results + [(name, sum(s for s, _ in v), sum(t for _, t in v)) for name, v in runs.items()]


OVERHEADS: dict[str, list[float]] = {}  # Ray Train row -> per repeat, the job's seconds outside its step loop
RATIOS: dict[str, list[float]] = {}  # Ray Train row -> per repeat, its tokens/s over the same repeat's in-process


def bench_ray(args, work: Path, rep: int, local: dict[str, float], runs: dict) -> None:
    """One repeat of the Ray Train rows (a fresh local Ray cluster, shut down after)."""
    import ray

    from training.optim_config import resolve_allocator
    from training.sft_trainer import fit

    # the dashboard as `w2s run` starts it (cluster.dashboard): without it Ray Train's
    # PlacementGroupCleaner queries a missing State API every second during the timed steps
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=True, log_to_driver=False)
    try:
        for engine, alloc in [(e, a) for a in args.ray_allocators.split(",") for e in ("torch", "deepspeed")]:
            job = make_job(str(work / f"ray_{engine}_{alloc}_{rep}"), args.steps, args.micro_batch, engine, args.spec)
            job.train.cpus_per_worker = os.cpu_count()
            job.train.allocator = alloc
            summary = fit(job, lambda s: None)
            secs, toks = timed_history(job.out_dir, args.warmup)
            used = resolve_allocator(job.train)
            name = (f"Ray Train, 1 worker, engine {engine}" + (" (ZeRO-2)" if engine == "deepspeed" else "")
                    + f", allocator {used}" + (f" ({alloc})" if used != alloc else ""))
            runs.setdefault(name, []).append((secs, toks))
            RATIOS.setdefault(name, []).append(toks / secs / local[engine])
            overhead = summary["seconds"] - read_history_span(job.out_dir)
            OVERHEADS.setdefault(name, []).append(overhead)
            print(f"repeat {rep + 1}/{args.repeats}: ray {engine} {alloc}: {toks / secs:.0f} tokens/s "
                  f"({RATIOS[name][-1]:.2f} of in-process); job start-up + saving {overhead:.1f} s", flush=True)
    finally:
        ray.shutdown()


def spread(values: list[float], fmt: str = ".2f") -> str:
    """The median, and over several repeats its range: '0.91 (0.83-0.97, 3 repeats)'."""
    med = f"{float(np.median(values)):{fmt}}"
    if len(values) == 1:
        return med
    return f"{med} ({min(values):{fmt}}-{max(values):{fmt}}, {len(values)} repeats)"


def label_table(results, args, peak32, peak16) -> str:
    arch, non_embed = model_arch(args.spec)
    timed = args.steps - args.warmup
    timed_rows = timed * args.micro_batch
    base = results[0][2] / results[0][1]
    seq = results[0][2] / timed_rows
    lines = [f"Label answers: {args.spec}, CSQA rows (mean {seq:.0f} tokens), micro-batch {args.micro_batch}, "
             f"{timed} timed steps" + (f" per run, {args.repeats} repeats" if args.repeats > 1 else "") + ".", "",
             "| what | tokens/s | s/step | model GFLOP/s | MFU vs bf16 peak | MFU vs fp32 peak | x plain | "
             "x in-process (same engine) | job start-up + saving (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, secs, toks in results:
        reps = 1 if name.startswith("plain") else args.repeats
        gfs = train_flops(toks, timed_rows * reps, arch, non_embed, seq) / secs / 1e9
        vs = spread(RATIOS[name]) if name in RATIOS else ""
        over = spread(OVERHEADS[name], ".1f") if name in OVERHEADS else ""
        lines.append(f"| {name} | {toks / secs:.0f} | {secs / timed / reps:.2f} | {gfs:.0f} | "
                     f"{gfs / peak16:.1%} | {gfs / peak32:.1%} | {toks / secs / base:.2f} | {vs} | {over} |")
    return "\n".join(lines)


def text_table(text, args, peak, prec) -> str:
    lines = [f"Answer text (configs/quickstart.yaml's template, answer: text, lm_normalize options), CSQA K=5, "
             f"micro-batch {args.micro_batch}, train_loop in-process, engine torch, precision {prec}; "
             f"{args.text_steps - args.warmup} timed steps after {args.warmup} warm-up step(s); same batches and "
             "initial weights for both paths.", "",
             f"| model | path | useful tokens/s | tokens run/s | s/step | model GFLOP/s | MFU vs {prec} peak "
             "| x K sequences | loss step 1 | loss last step |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in text:
        gfs = r["flops"] / r["secs"] / 1e9
        lines.append(f"| {r['spec']} | {r['path']} | {r['useful'] / r['secs']:.0f} | {r['run'] / r['secs']:.0f} | "
                     f"{r['secs'] / r['steps']:.2f} | {gfs:.0f} | {gfs / peak:.1%} | {r['speedup']:.2f} | "
                     f"{r['loss1']:.4f} | {r['loss_last']:.4f} |")
    lines += ["", "useful tokens: per row, the prompt once plus every option's tokens (a packed row's length; the "
              "same count for both paths). tokens run: the real tokens the forward ran (the K-sequence path "
              "repeats the prompt per option). MFU counts each path's own FLOPs (module docstring)."]
    return "\n".join(lines)


def plot(results, text, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [x for x in (results, text) if x]  # no empty panel when a part was skipped
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6.5 * max(1, len(panels)), 3.5), squeeze=False)
    axes = list(axes[0])
    if results:
        ax = axes.pop(0)
        ax.barh(range(len(results)), [t / s for _, s, t in results])
        ax.set_yticks(range(len(results)), [r[0] for r in results], fontsize=7)
        ax.set_xlabel("training tokens/s, label answers")
    if text:
        ax = axes.pop(0)
        names = [f"{r['spec'].split(':', 1)[-1]}\n{r['path'].split(' (')[0]}" for r in text]
        ax.barh(range(len(text)), [r["useful"] / r["secs"] for r in text])
        ax.set_yticks(range(len(text)), names, fontsize=7)
        ax.set_xlabel("useful tokens/s, answer text (CSQA, K=5)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
