"""Weak-model scoring throughput: rows/s, tokens/s and model FLOP utilization (MFU).

    .venv/bin/python benchmarks/score_throughput.py [--rows 128] [--models 1,2,4] [--text-rows 64] \
        [--text-models embedded:smollm2-135m-instruct,embedded:gemma3-270m] [--out benchmarks/results]
    .venv/bin/python benchmarks/score_throughput.py --smoke --out /tmp/x   # tiny models, seconds

Label scoring (template.answer: label), on the same BoolQ held-out rows and prompts:
  peak      2048x2048 matmul GFLOP/s in fp32 and bf16 on this machine (the MFU denominators);
  baseline  a plain single-process Hugging Face loop: batch 1, fp32, full-sequence logits;
  backend   the HF backend in-process (dtype auto: bf16 where it is faster, length buckets, answer-position
            logits only): the scoring forward whose MFU the target is set for;
  stage     the annotation stage (Ray Data + weak actors in a placement group) with 1, 2, 4
            weak models (copies of SmolLM2-135M-Instruct), and 1 model on 2x the rows. The stage
            runs configs/quickstart.yaml with its data and every template field overridden by the
            backend rows' (label answers, annotate.method ensemble, strong.methods [naive]), so it
            scores the same prompts and label tokens; the table's note says whether its token
            count per model equals the backend's.
Option-text scoring (template.answer: text, configs/quickstart.yaml's template), on the same
CommonsenseQA held-out rows (K = 5), per model of --text-models:
  K sequences    HFBackend.score_texts with backend.shared_prompt=false: prompt + option per option;
  shared prompt  backend.shared_prompt=true: one packed sequence per row (actors/packing.py).
  Reported: rows/s, tokens run through the model (real tokens; padded positions beside them),
  the speed-up over the K-sequence path, and max |p_packed - p_K| over all option probabilities
  (bf16, the timed run; and fp32 on the first --check-rows rows, where the two should agree to ~1e-5).
Model FLOPs count the work each path runs, padding excluded: 2 * non-embedding params per token,
attention 4 * layers * L * hidden per token with L the length of the sequence it is in (PaLM's
convention, no causal halving; a packed row's attention is dense under its block mask, so L is
the packed length), plus the output projection 2 * hidden * vocab per logit position kept (label
rows: 1 per row; text rows: |y_k| + 1 per K-sequence, sum_k |y_k| + 1 per packed row). The stage
rows count every weak model's FLOPs. MFU: model FLOP/s over the measured matmul peak.
Prints Markdown tables with the CPU line and writes them with a PNG plot to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEC = "embedded:smollm2-135m-instruct"
TEXT_MODELS = "embedded:smollm2-135m-instruct,embedded:gemma3-270m"
TEMPLATE = {"template": "{prompt}\n{options}\nAnswer:"}  # label rows: letters, one label token each
SMOKE = {"spec": "tiny:llama:1", "text_models": "tiny:llama:1,tiny:gemma3:1", "rows": 8, "text_rows": 6,
         "check_rows": 3, "models": "1", "peak_n": 256}


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


def model_flops(cfg: dict, non_embed: int, lengths: list[int], head_positions: int) -> float:
    """Forward FLOPs of sequences of these (unpadded) lengths with head_positions logit positions."""
    per_token = 2 * non_embed
    # PaLM's convention: attention 4 * layers * seq_len * hidden per token, no causal halving
    attn = sum(4 * cfg["num_hidden_layers"] * L * L * cfg["hidden_size"] for L in lengths)
    return per_token * sum(lengths) + attn + 2 * cfg["hidden_size"] * cfg["vocab_size"] * head_positions


def label_template():
    from actors.prompts import TemplateConfig

    return TemplateConfig(**TEMPLATE)


def prompts(rows: int):
    from pipelines.data import DataConfig, read_source, split_rows
    from actors.prompts import render

    # the same rows as the stage's data split (bench_stage)
    cfg = DataConfig(source="embedded:boolq", weak_train=500, held_out=rows, test=0, max_prompt_chars=1200)
    held = split_rows(read_source(cfg), cfg)["held_out"]
    tcfg = label_template()
    texts, labels = zip(*[render(r["prompt"], r["options"], (0, 1), tcfg) for r in held])
    return held, list(texts), [list(lb) for lb in labels]


def text_template():
    """configs/quickstart.yaml's template (answer: text)."""
    from actors.prompts import TemplateConfig
    from cluster.loader import load_yaml

    tcfg = TemplateConfig(**load_yaml(ROOT / "configs" / "quickstart.yaml")["template"])
    if tcfg.answer != "text":
        raise SystemExit("configs/quickstart.yaml: template.answer is no longer text; the text rows need it")
    return tcfg


def text_prompts(rows: int, tcfg):
    """CommonsenseQA held-out rows rendered with the quickstart's template: (texts, option texts)."""
    from pipelines.data import DataConfig, read_source, split_rows
    from actors.prompts import render

    cfg = DataConfig(source="embedded:csqa", weak_train=0, held_out=rows, test=0, seed=0)
    held = split_rows(read_source(cfg), cfg)["held_out"]
    texts, answers = zip(*[render(r["prompt"], r["options"], range(len(r["options"])), tcfg) for r in held])
    return list(texts), [list(a) for a in answers]


def text_shapes(tok, spec: str, texts, answers, max_length: int, packed: bool) -> tuple[list[int], int]:
    """(unpadded sequence lengths, logit positions kept) of one path, tokenised as HFBackend does."""
    from actors.backend import encode_prompts

    lengths, heads = [], 0
    for t, row in zip(texts, answers):
        opts = [ids[: max_length - 1] for ids in tok(row, add_special_tokens=False)["input_ids"]]
        p = len(encode_prompts(tok, [t], False, max_length - max(len(c) for c in opts), spec)[0])
        if packed:
            lengths.append(p + sum(len(c) for c in opts))
            heads += sum(len(c) for c in opts) + 1
        else:
            lengths += [p + len(c) for c in opts]
            heads += sum(len(c) + 1 for c in opts)
    return lengths, heads


def bench_baseline(spec, texts, labels, threads):
    from actors.registry import load_model

    torch.set_num_threads(threads)
    model, tok = load_model(spec, dtype=torch.float32)
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


def bench_backend(spec, texts, labels, threads, dtype="auto", compile=False, max_batch_tokens=4096):
    from actors.backend import BackendConfig
    from actors.hf_backend import HFBackend

    b = HFBackend(spec, BackendConfig(dtype=dtype, threads=threads, max_batch_tokens=max_batch_tokens,
                                      compile=compile))
    for _ in range(2 if compile else 1):  # warm-up: the one-time compile, then the recompiles new shapes trigger
        t = time.perf_counter()
        b.score_options(texts, labels)
        print(f"  warm-up pass {time.perf_counter() - t:.1f} s", flush=True)
    b.tokens_seen = 0
    t = time.perf_counter()
    b.score_options(texts, labels)
    return time.perf_counter() - t, b.tokens_seen, b.info()


def bench_text(spec, texts, answers, threads, shared: bool, dtype="auto"):
    """HFBackend.score_texts with backend.shared_prompt on or off: (seconds, real tokens, padded
    positions, forward calls, probabilities, info, packed?)."""
    from actors.backend import BackendConfig
    from actors.hf_backend import HFBackend
    from actors.packing import supports_packing

    b = HFBackend(spec, BackendConfig(dtype=dtype, threads=threads, shared_prompt=shared))
    seen = {"positions": 0, "calls": 0}

    def count(_mod, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen["positions"] += ids.numel()
        seen["calls"] += 1

    hook = b.model.register_forward_pre_hook(count, with_kwargs=True)
    b.score_texts(texts, answers)  # warm-up
    b.tokens_seen, seen["positions"], seen["calls"] = 0, 0, 0
    t = time.perf_counter()
    probs = b.score_texts(texts, answers)
    secs = time.perf_counter() - t
    hook.remove()
    packed = shared and supports_packing(b.model)
    return secs, b.tokens_seen, seen["positions"], seen["calls"], probs, b.info(), packed


def max_prob_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def fp32_probs(spec, texts, answers, threads) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """fp32 option probabilities of (the K-sequence path, the packed path)."""
    from actors.backend import BackendConfig
    from actors.hf_backend import HFBackend

    k, packed = [HFBackend(spec, BackendConfig(dtype="float32", threads=threads, shared_prompt=s))
                 .score_texts(texts, answers) for s in (False, True)]
    return k, packed


def stage_overrides(n_models: int, rows: int, workdir: Path, spec: str, batch_rows: int,
                    shard_rows: int) -> list[str]:
    """configs/quickstart.yaml made to score what the backend rows score: BoolQ, every template
    field of label_template() (label answers, letters), the ensemble combine, n_models copies of
    `spec` as they are (weak.finetune off); strong.methods [naive] since the quickstart's rel_*
    methods need annotate.method=reliability."""
    tcfg = label_template()
    over = [f"run_dir={workdir / f'm{n_models}_r{rows}'}", "data.source=embedded:boolq", f"data.held_out={rows}",
            "data.weak_train=500", "data.test=0", "data.seed=0", f"data.shard_rows={shard_rows}", "data.max_prompt_chars=1200",
            "annotate.method=ensemble", f"annotate.batch_rows={batch_rows}", f"annotate.max_in_flight={max(2, n_models)}",
            "strong.methods=[naive]", "weak.finetune=false",
            "weak.models=" + json.dumps([{"spec": spec, "name": f"weak_{i}"} for i in range(n_models)])]
    over += [f"template.{f.name}={json.dumps(getattr(tcfg, f.name))}" for f in fields(tcfg)]
    return over


def bench_stage(n_models: int, rows: int, workdir: Path, spec: str, batch_rows: int, shard_rows: int):
    """The annotation stage end to end; returns (seconds of streaming, tokens, rows)."""
    from cluster.loader import load_config
    from pipelines.run import RunConfig, run

    cfg = load_config(RunConfig, ROOT / "configs" / "quickstart.yaml", stage_overrides(n_models, rows, workdir, spec, batch_rows, shard_rows))
    if cfg.template != label_template() or len(cfg.weak.models) != n_models:
        raise RuntimeError(f"stage config does not score the backend rows' prompts: {cfg.template}")
    m = run(cfg, lambda s: None, until="weak_labels")["stages"]["weak_labels"]
    return m["seconds"], m["tokens"], m["rows"]


def main():
    from cluster.config import MALLOC_ENV

    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        # the in-process backend runs need the same allocator settings the actors get
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=128, help="BoolQ rows of the label rows")
    ap.add_argument("--models", default="1,2,4", help="weak models of the stage rows")
    ap.add_argument("--spec", default=SPEC, help="model of the label rows")
    ap.add_argument("--text-rows", type=int, default=64, help="CommonsenseQA rows of the option-text rows (0: none)")
    ap.add_argument("--text-models", default=TEXT_MODELS, help="comma-separated specs of the option-text rows")
    ap.add_argument("--check-rows", type=int, default=16, help="rows of the fp32 packed vs K-sequence check (0: none)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--skip-stage", action="store_true")
    from pipelines.annotate import AnnotateConfig
    from pipelines.data import DataConfig

    ap.add_argument("--stage-batch-rows", type=int, default=AnnotateConfig.batch_rows,
                    help="annotate.batch_rows of the stage rows (default: the config default)")
    ap.add_argument("--stage-shard-rows", type=int, default=DataConfig.shard_rows,
                    help="data.shard_rows of the stage rows (default: the config default)")
    ap.add_argument("--skip-compile", action="store_true", help="no torch.compile row (1-2 min of compiling)")
    ap.add_argument("--skip-labels", action="store_true", help="option-text rows only")
    ap.add_argument("--smoke", action="store_true",
                    help=f"tiny random models and sizes, seconds: {SMOKE}; no compile row, no 2x-rows stage row")
    args = ap.parse_args()
    if args.smoke:
        for k in ("spec", "text_models", "rows", "text_rows", "check_rows", "models"):
            setattr(args, k, SMOKE[k])
        args.skip_compile = True
    from benchmarks.machine import cpu_line, load_line

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    cpu, load_at_start = cpu_line(), load_line()
    print(f"machine: {cpu}; {load_at_start}", flush=True)
    n_peak = SMOKE["peak_n"] if args.smoke else 2048
    peak32, peak16 = matmul_peak(torch.float32, n_peak), matmul_peak(torch.bfloat16, n_peak)
    print(f"matmul peak on {args.threads} threads: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s", flush=True)

    results, stage_rows, notes = [], [], []
    base_secs = None
    if not args.skip_labels:
        base_secs = bench_labels(args, peak16, results, stage_rows, notes)
    text = bench_text_rows(args) if args.text_rows and args.text_models else []

    head = (f"Machine: {cpu}; {args.threads} threads; matmul peak fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} "
            f"GFLOP/s ({n_peak}^2); {load_at_start} at the start, {load_line()} at the end.\n\n"
            f"Command: `.venv/bin/python {' '.join(['benchmarks/score_throughput.py'] + sys.argv[1:])}`")
    parts = [head]
    if results:
        parts += ["", f"Label scoring: BoolQ held-out, {args.rows} rows, K=2, {args.spec}.", "",
                  render_table(results, peak32, peak16, base_secs / args.rows)] + [""] * bool(notes) + notes
    if text:
        parts += ["", render_text_table(text, peak16, args)]
    table = "\n".join(parts)
    print(table)
    (out / "score_throughput.md").write_text(table + "\n")
    plot(results, stage_rows, text, out / "score_throughput.png")


def bench_labels(args, peak16, results, stage_rows, notes) -> float:
    """The label rows (backend, compile, fp32, baseline, stage); returns the baseline's seconds."""
    held, texts, labels = prompts(args.rows)
    from actors.registry import load_tokenizer

    tok = load_tokenizer(args.spec)
    lengths = [len(x) for x in tok(texts)["input_ids"]]
    secs, b_tok, info = bench_backend(args.spec, texts, labels, args.threads)
    arch, non_embed = info["config"], info["non_embedding_params"]
    fl = model_flops(arch, non_embed, lengths, len(texts))  # one answer-position logit row per text
    auto = "bf16" if info["dtype"] == "bfloat16" else "fp32"  # dtype auto: bf16 only where it is faster
    results.append((f"backend dtype auto ({auto}), buckets, answer-position logits", len(texts), secs, b_tok, fl,
                    info["dtype"]))
    print(f"backend ({auto}): {len(texts) / secs:.1f} rows/s, MFU bf16 {fl / secs / 1e9 / peak16:.1%}", flush=True)
    if not args.skip_compile:
        secs_c, c_tok, _ = bench_backend(args.spec, texts, labels, args.threads, compile=True)
        results.append((f"backend dtype auto ({auto}) + torch.compile", len(texts), secs_c, c_tok, fl, info["dtype"]))
        print(f"backend compiled: {len(texts) / secs_c:.1f} rows/s, MFU bf16 {fl / secs_c / 1e9 / peak16:.1%}",
              flush=True)
    secs32, t32, _ = bench_backend(args.spec, texts, labels, args.threads, dtype="float32")
    results.append(("backend fp32, buckets, answer-position logits", len(texts), secs32, t32, fl, "float32"))

    base_secs, base_tok = bench_baseline(args.spec, texts, labels, args.threads)
    results.append(("baseline: HF loop, batch 1, fp32, full logits", len(texts), base_secs, base_tok, fl, "float32"))
    print(f"baseline: {len(texts) / base_secs:.1f} rows/s", flush=True)

    if not args.skip_stage:
        from cluster.config import ClusterConfig
        from cluster.connect import connect

        models = [int(x) for x in args.models.split(",")]
        # declare the largest plan's logical GPUs up front: a local cluster cannot grow later (w2s run
        # checks every plan of the config, the evaluation pass of ceiling + naive among them: 2)
        connect(ClusterConfig(num_cpus=os.cpu_count()), max(*models, 2))
        work = Path(tempfile.mkdtemp(prefix="w2s-bench-"))
        runs = [(n, args.rows) for n in models] + ([] if args.smoke else [(1, args.rows * 2)])
        try:
            for n, rows in runs:
                s, tk, r = bench_stage(n, rows, work, args.spec, args.stage_batch_rows, args.stage_shard_rows)
                stage_rows.append((n, r, s, tk))
                name = f"stage: {n} weak model(s)" if rows == args.rows else f"stage: {n} weak model, 2x rows"
                results.append((name, r, s, tk, fl * n * rows / args.rows, "bfloat16"))
                print(f"{name}: {r / s:.1f} rows/s", flush=True)
                if rows == args.rows:
                    same = "equal to" if tk == n * b_tok else f"NOT equal to ({tk / n:.0f} vs)"
                    notes.append(f"- {name}: {tk} tokens = {tk / n:.0f} per model, {same} the backend rows' "
                                 f"{b_tok} (same prompts and label tokens).")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        notes.append(stage_marginal_note(stage_rows, secs, args))
    return base_secs


def stage_marginal_note(stage_rows, backend_secs: float, args) -> str:
    """The 1-model stage's cost per extra row (from its 1x and 2x rows) against the in-process
    backend's per row, and the fixed start-up left: the issue's >= 0.9 beyond <= 5 s."""
    one = {r: s for n, r, s, _ in stage_rows if n == 1}
    if len(one) < 2:
        return "- stage marginal: needs the 1-model stage at 1x and 2x rows (not in smoke mode)."
    (r1, s1), (r2, s2) = sorted(one.items())
    per_row = (s2 - s1) / (r2 - r1)
    ref = backend_secs / args.rows
    return (f"- stage marginal (annotate.batch_rows {args.stage_batch_rows}, data.shard_rows "
            f"{args.stage_shard_rows}): {per_row:.3f} s per extra row vs {ref:.3f} in-process = "
            f"{ref / per_row:.2f} of the backend; fixed start-up {s1 - r1 * per_row:.1f} s.")


def bench_text_rows(args) -> list[dict]:
    """Per text model: the K-sequence reference and the packed path on the same CSQA rows."""
    from actors.registry import load_tokenizer

    tcfg = text_template()
    texts, answers = text_prompts(args.text_rows, tcfg)
    out = []
    for spec in args.text_models.split(","):
        tok = load_tokenizer(spec)
        ref = None
        for shared in (False, True):
            secs, toks, positions, calls, probs, info, packed = bench_text(spec, texts, answers, args.threads, shared)
            lengths, heads = text_shapes(tok, spec, texts, answers, 1024, packed)
            if toks != sum(lengths):
                print(f"  note: backend counted {toks} tokens, the FLOP count's tokenisation {sum(lengths)}")
            fl = model_flops(info["config"], info["non_embedding_params"], lengths, heads)
            row = {"spec": spec, "path": "shared prompt (packed)" if packed else
                   ("K sequences (reference)" if not shared else "shared prompt requested, NOT packed"),
                   "rows": len(texts), "secs": secs, "tokens": toks, "positions": positions, "calls": calls,
                   "flops": fl, "dtype": info["dtype"], "probs": probs}
            if ref is None:
                ref = row
            row["speedup"] = ref["secs"] / secs
            row["max_dp"] = max_prob_diff(probs, ref["probs"])
            out.append(row)
            print(f"{spec} {row['path']}: {len(texts) / secs:.2f} rows/s, {toks} tokens, x{row['speedup']:.2f}, "
                  f"max |dp| {row['max_dp']:.2e}", flush=True)
        if args.check_rows:
            n = min(args.check_rows, len(texts))
            k32, p32 = fp32_probs(spec, texts[:n], answers[:n], args.threads)
            # the bf16 paths' own error against the fp32 reference, to set the bf16 dp above against
            row["check"] = {"rows": n, "fp32_dp": max_prob_diff(p32, k32),
                            "bf16_k_err": max_prob_diff(ref["probs"][:n], k32),
                            "bf16_packed_err": max_prob_diff(row["probs"][:n], k32)}
            print(f"{spec} fp32 check on {n} rows: {row['check']}", flush=True)
    return out


def render_table(results, peak32, peak16, base_s_per_row) -> str:
    lines = ["| what | rows | s | rows/s | tokens/s | model GFLOP/s | MFU vs bf16 peak | MFU vs fp32 peak "
             "| x baseline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, rows, secs, toks, fl, _ in results:
        gfs = fl / secs / 1e9
        lines.append(f"| {name} | {rows} | {secs:.1f} | {rows / secs:.2f} | {toks / secs:.0f} | {gfs:.0f} | "
                     f"{gfs / peak16:.1%} | {gfs / peak32:.1%} | {base_s_per_row * rows / secs:.1f} |")
    return "\n".join(lines)


def render_text_table(text: list[dict], peak16, args) -> str:
    tcfg = text_template()
    lines = [f"Option-text scoring (template.answer: text, configs/quickstart.yaml's template {tcfg.template!r}, "
             f"option_line {tcfg.option_line!r}, option_sep {tcfg.option_sep!r}): CommonsenseQA held-out, "
             f"{args.text_rows} rows, K=5, HFBackend.score_texts, {text[0]['dtype']}, max_batch_tokens 4096; "
             "one warm-up pass, then one timed pass.", "",
             "| model | path | rows | s | rows/s | tokens run | padded positions | forward calls | tokens/s "
             "| model GFLOP/s | MFU vs bf16 peak | x K sequences | max abs dp vs K sequences |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in text:
        gfs = r["flops"] / r["secs"] / 1e9
        lines.append(f"| {r['spec']} | {r['path']} | {r['rows']} | {r['secs']:.2f} | {r['rows'] / r['secs']:.2f} | "
                     f"{r['tokens']} | {r['positions']} | {r['calls']} | {r['tokens'] / r['secs']:.0f} | {gfs:.0f} | "
                     f"{gfs / peak16:.1%} | {r['speedup']:.2f} | {r['max_dp']:.1e} |")
    lines.append("")
    lines.append("tokens run: real (unpadded) tokens through the model (HFBackend.tokens_seen; K sequences run the "
                 "prompt once per option, packed once per row); padded positions: input positions of every "
                 "forward, padding included. MFU counts each path's own FLOPs (see the module docstring).")
    for r in text:
        if "check" in r:
            c = r["check"]
            lines.append(f"- {r['spec']}, first {c['rows']} rows: fp32 packed vs fp32 K sequences max abs dp "
                         f"{c['fp32_dp']:.1e}; against fp32 K sequences, the bf16 K-sequence path is off by up to "
                         f"{c['bf16_k_err']:.1e} and the bf16 packed path by up to {c['bf16_packed_err']:.1e}"
                         + (" (the same order: bf16 rounding, not packing, makes the bf16 dp column)."
                            if c["bf16_packed_err"] <= 2 * c["bf16_k_err"] and c["fp32_dp"] < 1e-4 else
                            " (the packed path is off by more than bf16 rounding of the reference: look into it)."))
    return "\n".join(lines)


def plot(results, stage_rows, text, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    if results:
        axes[0].barh(range(len(results)), [r[1] / r[2] for r in results])
        axes[0].set_yticks(range(len(results)), [r[0] for r in results], fontsize=7)
        axes[0].set_xlabel("rows/s, label scoring (row = one prompt scored by every weak model)")
    if stage_rows:
        xs = [n * r for n, r, _, _ in stage_rows]
        axes[1].plot(xs, [s for _, _, s, _ in stage_rows], "o")
        for n, r, s, _ in stage_rows:
            axes[1].annotate(f"{n} model(s), {r} rows", (n * r, s), fontsize=7)
        axes[1].set_xlabel("model-rows (weak models x rows)")
        axes[1].set_ylabel("stage seconds")
        axes[1].set_title("annotation cost vs work")
    if text:
        names = [f"{r['spec'].split(':', 1)[-1]}\n{r['path'].split(' (')[0]}" for r in text]
        axes[2].barh(range(len(text)), [r["rows"] / r["secs"] for r in text])
        axes[2].set_yticks(range(len(text)), names, fontsize=7)
        axes[2].set_xlabel("rows/s, option-text scoring (CSQA, K=5)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
