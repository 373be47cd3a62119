"""Scale by simulation: weak annotation with 1 to 64 simulated weak models over 8 simulated nodes,
and driver / object-store memory as rows grow. Simulated models (`sim:` specs) compute nothing:
each batch costs a fixed latency, and actors sharing a logical GPU take turns, so the figures
measure the system (placement, streaming, actor pools), never a model.

    .venv/bin/python benchmarks/scale_sim.py                 # both tables (~10 min on 2 cores)
    .venv/bin/python benchmarks/scale_sim.py --part models   # or: --part rows

models  8 nodes x 8 logical GPUs (ray.cluster_utils.Cluster); N weak models at one GPU each, then
        64 models at 1/2 and 1/4 GPU (32 and 16 GPUs: the plan runs out of GPUs); the ideal wall
        time is the batches' latency alone: an actor runs one call at a time and every model
        scores every batch, so ideal = batches x latency x models per GPU (flat in models)
rows    4 weak models (0 ms) on one node over 1k, 10k, 100k rows: the driver's peak RSS and the
        object store's peak use, each size in a fresh process
Writes --out/scale_sim.md (default benchmarks/results).

    .venv/bin/python benchmarks/scale_sim.py --smoke --out /tmp/x   # 2 nodes x 2 GPUs, 1-2 models, 200 rows
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# (weak models, GPU share per model) of the models table
PLANS = [(1, 1.0), (4, 1.0), (16, 1.0), (64, 1.0), (64, 0.5), (64, 0.25)]
SMOKE = {"nodes": 2, "gpus_per_node": 2, "plans": [(1, 1.0), (4, 0.5)], "rows": 64, "latency_ms": 20.0,
         "sizes": [200]}


def rows(n: int) -> list[dict]:
    return [{"id": f"r{i:07d}", "prompt": f"Question {i}: which of these options answers it best, and why?",
             "options": ["alpha", "beta", "gamma", "delta"], "label": i % 4} for i in range(n)]


def annotate(split: Path, out: Path, n_models: int, latency_ms: float, cluster_cfg, batch_rows: int,
             in_flight: int) -> dict:
    from actors.model_config import ModelConfig
    from actors.prompts import TemplateConfig
    from pipelines.annotate import AnnotateConfig, annotate_stage
    from pipelines.roles import WeakConfig

    weak = WeakConfig(models=[ModelConfig(spec=f"sim:m{i}:{latency_ms:g}") for i in range(n_models)])
    acfg = AnnotateConfig(method="ensemble" if n_models > 1 else "naive", batch_rows=batch_rows, max_in_flight=in_flight)
    logs: list[str] = []
    t0 = time.time()
    summary = annotate_stage(split, out, weak, acfg, TemplateConfig(), cluster_cfg, log=logs.append)
    ready = next((float(x.split("actors ready in ")[1].split(" s")[0]) for x in logs if "actors ready in" in x), None)
    return {"stream_s": summary["seconds"], "total_s": time.time() - t0, "actors_ready_s": ready,
            "rows": summary["rows"], "nodes": next((x.split(" over ")[1] for x in logs if " over " in x), "")}


def part_models(args) -> list[dict]:
    import ray
    from ray.cluster_utils import Cluster

    from cluster.config import ClusterConfig
    from pipelines.data import write_split

    n_rows, batch_rows, in_flight, latency = args.rows, 16, 8, args.latency_ms
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "num_gpus": 0})
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=8, num_gpus=args.gpus_per_node)
    cluster.wait_for_nodes()
    out = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            split = Path(tmp) / "held_out"
            write_split(rows(n_rows), split, shard_rows=64)
            # warm-up (not reported): the first stage on a fresh cluster also starts Ray Data's
            # worker processes on every node
            warm = ClusterConfig(address=cluster.address, cpus_per_actor=0.1, strategy="SPREAD")
            annotate(split, Path(tmp) / "warmup", min(8, args.nodes * args.gpus_per_node), latency, warm,
                     batch_rows, in_flight)
            _settle()
            for i, (n, share) in enumerate(args.plans):
                cfg = ClusterConfig(address=cluster.address, weak_gpu=share, cpus_per_actor=0.1, strategy="SPREAD",
                                    ready_timeout_s=900)
                r = annotate(split, Path(tmp) / f"out{i}", n, latency, cfg, batch_rows, in_flight)
                per_gpu = round(1 / share)
                # an actor runs one call at a time (as a GPU runs one batch), every model sees every
                # batch, and models sharing a GPU take turns
                ideal = math.ceil(n_rows / batch_rows) * latency / 1000 * min(per_gpu, n)
                out.append({"models": n, "gpu_share": share, "gpus": math.ceil(n * share), **r, "ideal_s": ideal})
                print(json.dumps(out[-1]), flush=True)
                _settle()
    finally:
        ray.shutdown()
        cluster.shutdown()
    return out


def _settle(timeout: float = 120.0) -> None:
    import ray

    deadline = time.time() + timeout
    while time.time() < deadline and ray.available_resources().get("GPU", 0) < ray.cluster_resources().get("GPU", 0):
        time.sleep(0.2)


def one_size(n_rows: int) -> dict:
    """In a fresh process: annotate n_rows with 4 sim models, sampling the object store's use."""
    import ray

    from cluster.config import ClusterConfig
    from pipelines.data import write_split

    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "held_out"
        write_split(rows(n_rows), split, shard_rows=1000)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cfg = ClusterConfig(num_cpus=2, num_gpus=4, cpus_per_actor=0.2)
        from cluster.connect import connect

        connect(cfg, 4)
        peak = {"store": 0.0}
        stop = threading.Event()

        def sample():
            total = ray.cluster_resources().get("object_store_memory", 0)
            while not stop.is_set():
                used = total - ray.available_resources().get("object_store_memory", total)
                peak["store"] = max(peak["store"], used)
                time.sleep(0.05)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        r = annotate(split, Path(tmp) / "out", 4, 0.0, cfg, 64, 4)
        stop.set()
        th.join()
        ray.shutdown()
    return {"rows": n_rows, **r, "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "driver_rss_before_mb": rss_before, "object_store_peak_mb": peak["store"] / 2**20}


def part_rows(args) -> list[dict]:
    out = []
    for n in args.sizes:
        proc = subprocess.run([sys.executable, __file__, "--one-size", str(n)], capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("SIZE ")]
        if proc.returncode or not line:
            raise RuntimeError(f"{n} rows failed:\n{proc.stderr[-3000:]}")
        out.append(json.loads(line[-1][5:]))
        print(json.dumps(out[-1]), flush=True)
    return out


def render(models: list[dict], sizes: list[dict], args) -> str:
    from benchmarks.machine import cpu_line, load_line

    lines = [f"Machine: {cpu_line()}. Simulated weak models (sim:, no model compute), "
             f"{args.latency_ms:g} ms per batch of 16 rows, 8 batches in flight. {args.load_at_start} at the start, "
             f"{load_line()} at the end.", "",
             f"Command: `.venv/bin/python {' '.join(['benchmarks/scale_sim.py'] + sys.argv[1:])}`", ""]
    if models:
        lines += [f"Annotation of {args.rows} rows over {args.nodes} simulated nodes x {args.gpus_per_node} logical GPUs "
                  "(SPREAD):", "",
                  "| weak models | GPU share | GPUs | actors ready (s) | stream wall (s) | ideal (s) | ideal / wall | rows/s |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {m['models']} | {m['gpu_share']:g} | {m['gpus']} | {m['actors_ready_s']:.1f} | {m['stream_s']:.1f} | "
                  f"{m['ideal_s']:.1f} | {m['ideal_s'] / m['stream_s']:.2f} | {m['rows'] / m['stream_s']:.0f} |"
                  for m in models]
        lines.append("")
    if sizes:
        lines += ["Memory as rows grow (4 sim models at 0 ms, one node, batches of 64 rows):", "",
                  "| rows | stream wall (s) | rows/s | driver peak RSS (MB) | object store peak (MB) |", "|---|---|---|---|---|"]
        lines += [f"| {s['rows']} | {s['stream_s']:.1f} | {s['rows'] / s['stream_s']:.0f} | {s['driver_peak_rss_mb']:.0f} | "
                  f"{s['object_store_peak_mb']:.1f} |" for s in sizes]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["models", "rows", "both"], default="both")
    p.add_argument("--rows", type=int, default=512, help="rows of the models table")
    p.add_argument("--latency-ms", type=float, default=200.0)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--nodes", type=int, default=8, help="simulated worker nodes of the models table")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--smoke", action="store_true", help=f"seconds: {SMOKE}")
    p.add_argument("--one-size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.plans = PLANS
    if args.smoke:
        for k, v in SMOKE.items():
            setattr(args, k, v)
    if args.one_size:
        print("SIZE " + json.dumps(one_size(args.one_size)), flush=True)
        return
    from benchmarks.machine import cpu_line, load_line

    args.load_at_start = load_line()
    print(f"machine: {cpu_line()}; {args.load_at_start}", flush=True)
    models = part_models(args) if args.part in ("models", "both") else []
    sizes = part_rows(args) if args.part in ("rows", "both") else []
    table = render(models, sizes, args)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dest = out / "scale_sim.md"
    dest.write_text(table + "\n")
    print(f"written {dest}")


if __name__ == "__main__":
    main()
