"""What ray.train.report costs a training step, per reporting rule, in one Ray Train job.

Ray Train V2 puts each report on a queue of size 1 that its controller drains once per health check
(RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s by default): a report per step holds a step shorter than
that to about 2 s. training/sft_trainer.py therefore reports every REPORT_EVERY_S seconds (and at
checkpoints and the last step). One worker runs the same fixed matmul work per step three ways:
no report (the reference), a report every step (the old rule) and w2s's rule.

    .venv/bin/python benchmarks/ray_report_cost.py                    # 3 x 30 steps of ~0.05 s
    .venv/bin/python benchmarks/ray_report_cost.py --work 1.0         # steps of ~1 s
    .venv/bin/python benchmarks/ray_report_cost.py --smoke --out /tmp/x
Writes --out/ray_report_cost.md (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import cpu_line, load_line  # noqa: E402


def loop(cfg: dict) -> None:
    """The worker: calibrate matmuls to about cfg['work'] seconds, then time each rule."""
    import json

    import ray.train
    import torch

    from training.sft_trainer import report_due

    x = torch.randn(256, 256)
    t, n = time.time(), 0
    while time.time() - t < 0.5:
        x = (x @ x).tanh()
        n += 1
    reps = max(1, int(n * cfg["work"] / 0.5))
    out = {}
    for rule in ("none", "every step", "w2s"):
        time.sleep(2.5)  # the controller drains the previous rule's last report first
        t0 = last = time.time()
        for step in range(cfg["steps"]):
            for _ in range(reps):
                x = (x @ x).tanh()
            if rule == "every step" or (rule == "w2s" and report_due(step, cfg["steps"], last)):
                ray.train.report({"rule": rule, "step": step})
                last = time.time()
        out[rule] = (time.time() - t0) / cfg["steps"]
    Path(cfg["result"]).write_text(json.dumps(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--work", type=float, default=0.05, help="seconds of matmul work per step")
    ap.add_argument("--smoke", action="store_true", help="5 steps of ~0.05 s")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args()
    if a.smoke:
        a.steps, a.work = 5, 0.05
    import json

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from training.sft_trainer import REPORT_EVERY_S

    load0 = load_line()
    with tempfile.TemporaryDirectory() as d:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        cfg = {"steps": a.steps, "work": a.work, "result": str(Path(d) / "r.json")}
        TorchTrainer(loop, train_loop_config=cfg, scaling_config=ScalingConfig(num_workers=1),
                     run_config=RunConfig(storage_path=d, name="report_cost")).fit()
        ray.shutdown()
        res = json.loads(Path(cfg["result"]).read_text())
    lines = [f"Machine: {cpu_line()}; {load0} at the start, {load_line()} at the end.", "",
             f"Command: `.venv/bin/python benchmarks/ray_report_cost.py --steps {a.steps} --work {a.work}`"
             f"{' (smoke)' if a.smoke else ''}", "",
             f"One Ray Train worker, {a.steps} steps of about {a.work} s of matmul work each.", "",
             "| reporting rule | s / step | x no report |", "|---|---|---|"]
    names = {"none": "no report (reference)", "every step": "ray.train.report every step (before)",
             "w2s": f"w2s: every {REPORT_EVERY_S:g} s, at checkpoints and the last step"}
    for k, label in names.items():
        lines.append(f"| {label} | {res[k]:.3f} | {res[k] / res['none']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "ray_report_cost.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
