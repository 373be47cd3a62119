"""The end-to-end run: one config chains the stages, each skipped when its output is complete.

    w2s run configs/quickstart.yaml [key=value ...]

Stages so far: data (seeded splits) -> weak_labels (annotation). Each stage writes one folder
under run_dir and a _SUCCESS.json; metrics.json collects the stage summaries.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from actors.weak import WeakConfig
from cluster.config import ClusterConfig
from pipelines.annotate import AnnotateConfig, annotate_stage
from pipelines.data import DataConfig, prepare_data
from pipelines.prompts import TemplateConfig


@dataclass
class RunConfig:
    weak: WeakConfig
    run_dir: str = "runs/default"
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)

    def __post_init__(self):
        if not self.run_dir:
            raise ValueError("run_dir: must be a non-empty path")

    @property
    def root(self) -> Path:
        return Path(self.run_dir)


def stage_data(cfg: RunConfig, log=print) -> dict:
    return prepare_data(cfg.data, cfg.root / "data", log)


def stage_annotate(cfg: RunConfig, log=print) -> dict:
    return annotate_stage(cfg.root / "data" / "held_out", cfg.root / "weak_labels", cfg.weak, cfg.annotate,
                          cfg.template, cfg.cluster, log)


STAGES = (("data", stage_data), ("weak_labels", stage_annotate))


def run(cfg: RunConfig, log=print, until: str | None = None) -> dict:
    """Run the stages in order (up to and including `until`), skipping complete ones."""
    t0 = time.time()
    metrics: dict = {"stages": {}}
    for name, fn in STAGES:
        t = time.time()
        result = fn(cfg, log)
        metrics["stages"][name] = {"seconds": round(time.time() - t, 2),
                                   **{k: v for k, v in result.items() if k not in ("config", "fingerprint")}}
        if name == until:
            break
    metrics["seconds"] = round(time.time() - t0, 2)
    (cfg.root / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log(f"run: done in {metrics['seconds']:.1f} s; metrics in {cfg.root / 'metrics.json'}")
    return metrics
