"""Weak-to-strong search cost: CBS batched across prompts vs one prompt at a time, beside Best-of-N
and plain sampling, in one process on the same prompts.

    .venv/bin/python benchmarks/search_throughput.py [--prompts 8] [--out benchmarks/results]
    .venv/bin/python benchmarks/search_throughput.py --smoke --out /tmp/x    # tiny random models, seconds

The large model (default embedded:gemma3-270m) samples the chunks; the small tuned / untuned
pair (default: SmolLM2-135M-Instruct, or --tuned, e.g. runs/search/search_tuned/model) scores
every hypothesis, each by one teacher-forced pass (pipelines/cbs.py through the actors' methods,
here called in-process: the figures are the models' and the search's, not Ray's). Rows:
  batched        one chunk_beam_search call for all prompts: per step one large-model call and
                 one scoring call per small model for every live beam of every prompt
  one at a time  one call per prompt (the same settings and seeds)
Reported: wall seconds, large-model tokens generated per second, large-model calls, small-model
passes (hypotheses scored) per generated token, scoring calls. Prints a Markdown table with the
CPU line and writes it to --out/search_throughput.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def models(args):
    from actors.backend import BackendConfig
    from actors.base import BackendActor

    if args.smoke:
        cfg = BackendConfig(dtype="float32", threads=1, max_length=128, max_batch_tokens=1024)
        return (BackendActor("large", "tiny:gemma3:7", cfg), BackendActor("tuned", "tiny:llama:1", cfg),
                BackendActor("untuned", "tiny:llama:2", cfg))
    cfg = BackendConfig()
    small = "embedded:smollm2-135m-instruct"
    return (BackendActor("large", args.large, cfg), BackendActor("tuned", args.tuned or small, cfg),
            BackendActor("untuned", small, cfg))


def prompts(n: int) -> list[str]:
    from pipelines.datasets import load_embedded

    rows = load_embedded("piqa")[:n]
    return [f"{r['prompt']}\nSolution:\n" for r in rows]  # newline-ended, as configs/search.yaml: no empty answers


def run(ps: list[str], large, tuned, untuned, search: dict, batched: bool) -> dict:
    """Wall seconds and counts of one decoder over the prompts, batched or one prompt per call."""
    from pipelines.cbs import chunk_beam_search

    calls = {"large": 0, "score": 0}

    def sample_fn(p, partials, n, max_tokens):
        calls["large"] += 1
        return large.sample_chunks(p, partials, n, max_tokens, 0.7, 50, calls["large"], False, ["\n"])

    def score_fn(p, responses, finished):
        calls["score"] += 1
        a, b = tuned.response_logprobs(p, responses, finished), untuned.response_logprobs(p, responses, finished)
        return [x - y for x, y in zip(a, b)]

    t = time.time()
    groups = [ps] if batched else [[p] for p in ps]
    out = [r for g in groups for r in chunk_beam_search(g, sample_fn, score_fn, **search)]
    seconds = time.time() - t
    generated = sum(r["generated"] for r in out)
    return {"seconds": seconds, "generated": generated, "tokens_per_s": generated / seconds,
            "large_calls": calls["large"], "score_calls": calls["score"],
            "scored_per_token": sum(r["scored"] for r in out) / max(generated, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--large", default="embedded:gemma3-270m")
    ap.add_argument("--tuned", default="")
    ap.add_argument("--width", type=int, default=2)
    ap.add_argument("--successors", type=int, default=2)
    ap.add_argument("--chunk-tokens", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.prompts, args.chunk_tokens, args.max_new_tokens = 3, 3, 7
    from benchmarks.machine import cpu_line, load_line

    large, tuned, untuned = models(args)
    ps = prompts(args.prompts)
    w, k = args.width, args.successors
    cbs = {"width": w, "successors": k, "chunk_tokens": args.chunk_tokens, "max_new_tokens": args.max_new_tokens}
    cases = [("CBS", "batched", cbs, True), ("CBS", "one at a time", cbs, False),
             (f"Best-of-{w * k}", "batched", {**cbs, "width": 1, "successors": w * k, "chunk_tokens": 0}, True),
             ("sampling", "batched", {**cbs, "width": 1, "successors": 1, "chunk_tokens": 0}, True)]
    run(ps[:1], large, tuned, untuned, cbs, True)  # warm-up: first calls allocate
    start_load = load_line()
    rows = [(name, how, run(ps, large, tuned, untuned, s, b)) for name, how, s, b in cases]
    base = rows[1][2]["tokens_per_s"]
    lines = [f"Machine: {cpu_line()}; {start_load} at the start, {load_line()} at the end.", "",
             f"Command: `.venv/bin/python benchmarks/search_throughput.py{' --smoke' if args.smoke else ''}"
             f" --prompts {args.prompts}{' --tuned ' + args.tuned if args.tuned else ''}`", "",
             f"Large model {large.backend.spec} samples (temperature 0.7, top-k 50, stop at a newline); small pair "
             f"{tuned.backend.spec} - {untuned.backend.spec} scores; CBS W={w} K={k} L={args.chunk_tokens}, at most "
             f"{args.max_new_tokens} tokens; {len(ps)} PIQA goals; in one process.", "",
             "| decoder | prompts per call | seconds | large tokens generated | large tokens/s | large-model calls | "
             "scoring calls per small model | small-model passes per generated token | tokens/s vs CBS one at a time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, how, r in rows:
        lines.append(f"| {name} | {how} | {r['seconds']:.1f} | {r['generated']} | {r['tokens_per_s']:.1f} | "
                     f"{r['large_calls']} | {r['score_calls']} | {r['scored_per_token']:.3f} | "
                     f"{r['tokens_per_s'] / base:.2f}x |")
    lines += ["", "A small-model pass teacher-forces one whole hypothesis (the response so far) in each of the two "
              "small models; batched, one call per step carries every prompt's hypotheses."]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "search_throughput.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
