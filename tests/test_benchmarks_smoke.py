"""Every benchmark's --smoke mode end to end, as a subprocess: tiny random models, a handful of rows,
1-2 steps, output into tmp_path (never benchmarks/results). Each must exit 0 and print its table
with the machine line; the checks below also hold figures that could go wrong (the annotation
stage scoring the same tokens as the backend, the packed path agreeing with the K-sequence one).

The benchmarks start their own local Ray clusters (RAY_ADDRESS removed). To keep the file near
2-3 minutes on 2 cores they run two at a time, started together by a module fixture (only those
selected); each test waits for its own. benchmarks/gpu_check.py has tests/test_gpu_check.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# longest first, so two lanes finish close together
BENCHMARKS = ["score_throughput", "train_throughput", "seam_throughput", "serve_load", "scale_sim", "eval_pass",
              "search_throughput", "ray_report_cost"]
TIMEOUT_S = 420


def _run(name: str, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    t = time.time()
    try:
        p = subprocess.run([sys.executable, f"benchmarks/{name}.py", "--smoke", "--out", str(out)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        rc, text = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = "timeout", (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
    return {"rc": rc, "stdout": text, "out": out, "seconds": time.time() - t}


@pytest.fixture(scope="module")
def smoke_runs(request, tmp_path_factory, smollm2_ready):
    selected = {item.callspec.params["name"] for item in request.session.items
                if item.module.__name__ == __name__ and hasattr(item, "callspec")}
    results = ROOT / "benchmarks" / "results"
    before = {p.name: p.stat().st_mtime for p in results.iterdir() if p.is_file()}
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {n: pool.submit(_run, n, tmp_path_factory.mktemp(n)) for n in BENCHMARKS if n in selected}
    yield futures
    pool.shutdown(wait=True)
    after = {p.name: p.stat().st_mtime for p in results.iterdir() if p.is_file()}
    assert after == before, "a --smoke run wrote into benchmarks/results"


def _row(text: str, *cells: str) -> list[str]:
    """The cells of the first Markdown table row starting with these cells."""
    head = "| " + " | ".join(cells) + " |"
    line = next((x for x in text.splitlines() if x.startswith(head)), None)
    assert line is not None, f"no table row {head!r}"
    return [c.strip() for c in line.strip("|").split("|")]


def _check_score(text: str) -> None:
    # dtype auto names what it resolved to on this CPU (bf16 only where it is faster)
    assert re.search(r"^\| backend dtype auto \((bf16|fp32)\), buckets, answer-position logits \|", text, re.M)
    _row(text, "baseline: HF loop, batch 1, fp32, full logits")
    _row(text, "stage: 1 weak model(s)")
    # the stage and the backend rows score the same prompts and label tokens
    assert re.search(r"stage: 1 weak model\(s\): \d+ tokens = \d+ per model, equal to the backend rows'", text)
    for spec in ("tiny:llama:1", "tiny:gemma3:1"):
        ref = _row(text, spec, "K sequences (reference)")
        packed = _row(text, spec, "shared prompt (packed)")
        assert int(packed[5]) < int(ref[5]), "packed rows should run fewer tokens than K sequences"
        dp = re.search(rf"- {re.escape(spec)}, first \d+ rows: fp32 packed vs fp32 K sequences max abs dp (\S+);", text)
        assert dp and float(dp.group(1)) < 1e-4, f"{spec}: fp32 packed vs K-sequence probabilities differ"


def _check_train(text: str) -> None:
    for name in ("plain PyTorch loop: fp32, full logits, AdamW default", "train_loop in-process, engine torch",
                 "train_loop in-process, engine deepspeed"):
        _row(text, name)
    for alloc in ("jemalloc", "glibc"):  # the Ray Train rows, once per worker allocator
        for engine in ("torch", "deepspeed (ZeRO-2)"):
            _row(text, f"Ray Train, 1 worker, engine {engine}, allocator {alloc}")
    for spec in ("tiny:llama:1", "tiny:gemma3:1"):
        ref, packed = _row(text, spec, "K sequences"), _row(text, spec, "shared prompt (packed)")
        assert abs(float(ref[8]) - float(packed[8])) < 1e-2, "step-1 loss differs between the two paths"
        # the packed path runs each row's tokens once; the K-sequence path repeats the prompt per option
        assert packed[2] == packed[3] and int(ref[3]) > int(ref[2]), "tokens run vs useful tokens"


def _check_seam(text: str) -> None:
    _row(text, "batched")
    _row(text, "row-at-a-time")
    assert "| run | rows | batch rows |" in text


def _check_serve(text: str) -> None:
    assert "| setting | concurrency | requests | errors |" in text
    for setting in ("batching", "no batching"):
        for c in ("1", "4"):
            assert _row(text, setting, c)[3] == "0", f"{setting} at concurrency {c}: failed requests"


def _check_scale(text: str) -> None:
    _row(text, "1", "1", "1")
    _row(text, "4", "0.5", "2")  # 4 models at half a GPU: 2 GPUs over the 2 simulated nodes
    _row(text, "200")


def _check_eval(text: str) -> None:
    assert _row(text, "per model (before)")[1] == "3" and _row(text, "one pass (stage_eval)")[1] == "1"
    assert "Same predictions for every model both ways: yes." in text


def _check_search(text: str) -> None:
    batched, single = _row(text, "CBS", "batched"), _row(text, "CBS", "one at a time")
    # columns: decoder, prompts per call, seconds, tokens, tokens/s, large-model calls, scoring calls, ...
    assert int(batched[5]) < int(single[5]) and int(batched[6]) < int(single[6])  # one call per step for all prompts
    assert _row(text, "Best-of-4", "batched")[5] == "1" and _row(text, "sampling", "batched")[5] == "1"


def _check_report(text: str) -> None:
    ref = float(_row(text, "no report (reference)")[1])
    every = float(_row(text, "ray.train.report every step (before)")[1])
    w2s = float(next(x for x in text.splitlines() if x.startswith("| w2s:")).strip("|").split("|")[1])
    # 5 steps of 0.05 s: a report per step waits for the controller's 2 s poll; w2s's rule reports
    # once (the last step), on an empty queue
    assert every > 1.0 and w2s < 2 * ref + 0.3


CHECKS = {"ray_report_cost": _check_report, "search_throughput": _check_search, "eval_pass": _check_eval, "score_throughput": _check_score, "train_throughput": _check_train, "seam_throughput": _check_seam,
          "serve_load": _check_serve, "scale_sim": _check_scale}


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_smoke(name, smoke_runs):
    r = smoke_runs[name].result()
    tail = r["stdout"][-4000:]
    assert r["rc"] == 0, f"{name} --smoke: exit {r['rc']} after {r['seconds']:.0f} s\n{tail}"
    text = r["stdout"]
    assert "bf16 features:" in text, f"{name}: no machine line (benchmarks/machine.py cpu_line)\n{tail}"
    CHECKS[name](text)
    md = list(r["out"].glob("*.md"))
    assert md and "bf16 features:" in md[0].read_text(), f"{name}: no table with the machine line under --out"
    print(f"{name} --smoke: {r['seconds']:.0f} s")
