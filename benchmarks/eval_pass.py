"""Evaluation of a run's trained strong models: one stage per model vs one pass for all of them.

    .venv/bin/python benchmarks/eval_pass.py [--config configs/quickstart.yaml] [--out benchmarks/results]
    .venv/bin/python benchmarks/eval_pass.py --smoke --out /tmp/x     # tiny random models, seconds

The models are those `w2s run` evaluates after training (pipelines.run.eval_targets less the
zero-shot), read from the config's finished run_dir; --smoke scores three tiny random models on
the tiny profile's test split instead. On the same test rows, in the same process and cluster:
  per model  one annotation stage per model, as evaluation did before (Ray Data and an actor
             started and the model loaded once per model);
  one pass   pipelines.run.stage_eval's way: one stage, one actor per model, each model loaded
             once, every batch scored by all of them.
Reported: wall seconds (start-up included), rows x models per second, the speed-up, and whether
both ways give every model the same predictions. Prints a Markdown table with the CPU line and
writes it to --out.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SMOKE_TARGETS = {"tiny a": "tiny:llama:1", "tiny b": "tiny:llama:2", "tiny c": "tiny:llama:3"}


def load(config: str, smoke: bool, out: Path):
    """The run config, its test split and the models to score (name -> spec or model dir)."""
    from cluster.loader import load_config
    from pipelines.data import prepare_data
    from pipelines.run import RunConfig, eval_targets

    if smoke:
        cfg = load_config(RunConfig, ROOT / "configs" / "tiny.yaml", [f"run_dir={out / 'run'}"])
        prepare_data(cfg.data, cfg.root / "data", log=lambda m: None)
        return cfg, SMOKE_TARGETS
    cfg = load_config(RunConfig, config, [])
    targets = eval_targets(cfg)
    targets.pop("strong zero-shot")
    missing = [n for n, d in targets.items() if not Path(d).is_dir()]
    if missing:
        sys.exit(f"eval_pass: {cfg.root} has no trained {missing[0]!r}: run `w2s run {config}` first")
    return cfg, targets


def score(cfg, models: dict[str, str], out_dir: Path) -> tuple[float, dict]:
    """One annotation stage over the test split with these models; (seconds, name -> predictions)."""
    from actors.strong import StrongActor
    from pipelines.annotate import annotate_stage
    from pipelines.evaluate import predictions
    from pipelines.run import _strong_models

    t = time.time()
    method = "ensemble" if len(models) > 1 else "naive"
    annotate_stage(cfg.root / "data" / "test", out_dir, _strong_models(cfg, models), replace(cfg.annotate, method=method),
                   cfg.template, cfg.cluster, lambda m: None, actor_cls=StrongActor, role="strong")
    return time.time() - t, {n: predictions(out_dir, f"probs_{n}") for n in models}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    from benchmarks.machine import cpu_line, load_line
    from cluster.connect import connect
    from pipelines.data import read_split

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="eval_pass_", dir=out))
    cfg, targets = load(args.config, args.smoke, work)
    from pipelines.run import model_slug

    models = {model_slug(n): d for n, d in targets.items()}  # as stage_eval names them
    rows = len(read_split(cfg.root / "data" / "test"))
    connect(cfg.cluster, len(models))
    per_s, per_preds = 0.0, {}
    for n, d in models.items():
        s, p = score(cfg, {n: d}, work / "per_model" / n)
        per_s, per_preds = per_s + s, {**per_preds, **p}
    one_s, one_preds = score(cfg, models, work / "one_pass")
    same = all(per_preds[n] == one_preds[n] for n in models)
    lines = [f"Evaluation of {len(models)} trained strong models on {rows} test rows ({cfg.root}).", "",
             f"Machine: {cpu_line()}; {load_line()}.", "",
             "| way | stages | seconds (start-up included) | rows x models / s | speed-up |", "|---|---|---|---|---|",
             f"| per model (before) | {len(models)} | {per_s:.1f} | {rows * len(models) / per_s:.2f} | 1.00x |",
             f"| one pass (stage_eval) | 1 | {one_s:.1f} | {rows * len(models) / one_s:.2f} | {per_s / one_s:.2f}x |", "",
             f"Same predictions for every model both ways: {'yes' if same else 'NO'}."]
    text = "\n".join(lines)
    print(text)
    (out / ("eval_pass_smoke.md" if args.smoke else "eval_pass.md")).write_text(text + "\n")
    shutil.rmtree(work, ignore_errors=True)
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
