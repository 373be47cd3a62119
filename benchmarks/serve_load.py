"""Load test of the reward server's /v1/score: throughput and latency, with and without dynamic batching.

    .venv/bin/python benchmarks/serve_load.py [--requests 1200] [--concurrency 1,8,32] [--items 1] \
        [--out benchmarks/results] [model_dir=DIR key=value ...]

Starts a local Ray cluster and the Serve app (serving/server.py) on a free localhost port, with a
tiny random Bradley-Terry model (tiny:llama:7, one-label classifier head) unless `model_dir=` names a
reward model directory; other `key=value` pairs override configs/serve.yaml (e.g. num_cpus=2,
max_batch_size=32). For each setting (batching on, off) and concurrency, `--requests` POSTs
of `--items` (prompt, response) items each are sent by that many concurrent aiohttp clients after a
warm-up; every non-200 answer or exception is counted as an error. Prints a Markdown table (and
asserts zero errors), writes it to --out/serve_load.md with a PNG plot of req/s and p99 latency
against concurrency.

    .venv/bin/python benchmarks/serve_load.py --smoke --out /tmp/x   # 16 requests at concurrency 1 and 4, seconds
"""

import argparse
import asyncio
import dataclasses
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["What is the capital of France?", "Give me a synonym for happy.", "How many legs does a spider have?",
           "Summarise: the cat sat on the mat and looked out of the window all afternoon."]
RESPONSES = ["Paris.", "Joyful, or glad.", "Eight legs.", "A cat spent the afternoon on a mat, watching outside."]


def tiny_model_dir(root: Path) -> str:
    from actors.registry import load_model
    from actors.reward_model import save_reward_meta

    model, tok = load_model("tiny:llama:7", "classifier", num_labels=1)
    model.save_pretrained(root)
    tok.save_pretrained(root)
    save_reward_meta(root, "bt", max_length=256)
    return str(root)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def body(i: int, items: int) -> dict:
    return {"items": [{"prompt": PROMPTS[(i + k) % 4], "response": RESPONSES[(i + 2 * k) % 4]} for k in range(items)]}


async def load(url: str, n: int, concurrency: int, items: int, headers: dict) -> tuple[list[float], int, float]:
    """n POSTs by `concurrency` workers; (latencies in s of the successful ones, errors, wall seconds)."""
    import aiohttp

    latencies, errors, counter = [], 0, iter(range(n))
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def worker():
            nonlocal errors
            for i in counter:
                t = time.perf_counter()
                try:
                    async with session.post(url, json=body(i, items)) as r:
                        data = await r.json()
                        ok = r.status == 200 and len(data["rewards"]) == items
                except Exception:  # noqa: BLE001 - every failure is an error in the table
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        return latencies, errors, time.perf_counter() - t0


def stats(url: str, headers: dict) -> dict:
    import requests

    return requests.get(url + "/v1/stats", headers=headers, timeout=30).json()


def run_setting(cfg, args, rows: list[dict], log) -> None:
    from ray import serve

    from serving.server import serve_reward

    url = serve_reward(cfg)
    setting = "batching" if cfg.batching else "no batching"
    headers = {"Authorization": f"Bearer {cfg.token}"} if cfg.token else {}
    asyncio.run(load(url + "/v1/score", args.warmup, 8, args.items, headers))  # warm-up
    for c in args.concurrency:
        before = stats(url, headers)
        lat, errors, wall = asyncio.run(load(url + "/v1/score", args.requests, c, args.items, headers))
        after = stats(url, headers)
        ms = np.array(lat) * 1000
        forwards = after["forwards"] - before["forwards"]
        rows.append({"setting": setting, "concurrency": c, "requests": args.requests, "errors": errors,
                     "req/s": args.requests / wall, "p50 ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
                     "p99 ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
                     "items/forward": (after["items"] - before["items"]) / max(forwards, 1),
                     "ms/forward": 1000 * (after["busy_s"] - before["busy_s"]) / max(forwards, 1)})
        log(table_row(rows[-1]))
    serve.delete(cfg.name)


COLUMNS = ["setting", "concurrency", "requests", "errors", "req/s", "p50 ms", "p99 ms", "items/forward", "ms/forward"]


def table_row(row: dict) -> str:
    cells = [f"{row[k]:.1f}" if isinstance(row[k], float) else str(row[k]) for k in COLUMNS]
    return "| " + " | ".join(cells) + " |"


def table(rows: list[dict]) -> str:
    return "\n".join(["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)] + [table_row(r) for r in rows])


def summary(rows: list[dict]) -> str:
    """One line per concurrency: batching against no batching."""
    on = {r["concurrency"]: r for r in rows if r["setting"] == "batching"}
    off = {r["concurrency"]: r for r in rows if r["setting"] == "no batching"}
    lines = [f"- concurrency {c}: batching gives {on[c]['req/s'] / off[c]['req/s']:.2f}x the req/s of no batching, "
             f"p50 {on[c]['p50 ms']:.0f} vs {off[c]['p50 ms']:.0f} ms, p99 {on[c]['p99 ms']:.0f} vs "
             f"{off[c]['p99 ms']:.0f} ms; forwards of {on[c]['items/forward']:.1f} items in "
             f"{on[c]['ms/forward']:.1f} ms vs {off[c]['items/forward']:.1f} in {off[c]['ms/forward']:.1f} ms"
             for c in on if c in off]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for setting in dict.fromkeys(r["setting"] for r in rows):
        sel = [r for r in rows if r["setting"] == setting]
        xs = [r["concurrency"] for r in sel]
        axes[0].plot(xs, [r["req/s"] for r in sel], "o-", label=setting)
        axes[1].plot(xs, [r["p99 ms"] for r in sel], "o-", label=setting)
    for ax, title in zip(axes, ("throughput (req/s)", "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--items", type=int, default=1, help="(prompt, response) items per request")
    parser.add_argument("--warmup", type=int, default=64, help="requests sent before each setting's timed runs")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--smoke", action="store_true", help="16 requests at concurrency 1 and 4, 8 warm-up requests")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.concurrency, args.warmup = 16, [1, 4], 8
    from benchmarks.machine import cpu_line, load_line

    cpu, load_at_start = cpu_line(), load_line()
    print(f"machine: {cpu}; {load_at_start}", flush=True)

    from cluster.loader import load_config
    from serving.config import ServeConfig

    tmp = tempfile.TemporaryDirectory(prefix="w2s_serve_load_")
    overrides = list(args.overrides)
    user_model = any(o.startswith("model_dir=") for o in overrides)
    if not user_model:
        overrides.append(f"model_dir={tiny_model_dir(Path(tmp.name))}")
    base = load_config(ServeConfig, ROOT / "configs" / "serve.yaml",
                       [f"port={free_port()}", "name=w2s-serve-load", "access_log=false"] + overrides)
    rows: list[dict] = []
    for batching in (True, False):
        run_setting(dataclasses.replace(base, batching=batching), args, rows, print)
    text = table(rows)
    model = Path(base.model_dir).name if user_model else "tiny:llama:7"
    header = (f"Machine: {cpu}, CPU only; {load_at_start} at the start, {load_line()} at the end. "
              f"Model: {model} bt reward model; {args.items} item(s) per request; "
              f"1 replica with num_cpus={base.num_cpus}, "
              f"max_batch_size={base.max_batch_size}, batch_wait_timeout_s={base.batch_wait_timeout_s}. "
              "Clients: aiohttp on the same machine, through Serve's HTTP proxy on localhost.\n\n"
              f"Command: `.venv/bin/python {' '.join(['benchmarks/serve_load.py'] + sys.argv[1:])}`.\n\n")
    print(header + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    notes = ("\n\nitems/forward and ms/forward: the replica's scorer calls (tokenize + model forward, in its "
             "worker thread) during the setting, from /v1/stats. The rest of a request's latency is the serving "
             "path (HTTP proxy, routing, batching queue, JSON) on shared cores, where the load clients, the proxy "
             "and the replica compete for CPU. A lone client pays the batch wait (batch_wait_timeout_s) under "
             "batching.\n\n")
    (out / "serve_load.md").write_text(header + text + notes + summary(rows)
                                       + "\n\n![req/s and p99](serve_load.png)\n")
    plot(rows, out / "serve_load.png")
    errors = sum(r["errors"] for r in rows)
    assert errors == 0, f"{errors} requests failed"
    return 0


if __name__ == "__main__":
    sys.exit(main())
