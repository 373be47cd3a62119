"""SEAM (seed 000): the pre-trained strong model searches principle FF-trees, the one aligned weak
model decides; the tree-information filter keeps the better-informed half.

Labeller `seam` (annotate.method: seam): the search core is pipelines/seam.py, the streaming stage
pipelines/seam_annotate.py (strong.spec searches with strong.backend, weak.models[0] decides). The
same rows give the baselines' labels (seed 000, "Baselines").
Methods: every label source of Tables 1-2, each cross-entropy on its own labels and rows:
  seam (tree-information filter), seam_no_filter, naive_w2s (the weak model on the plain prompt),
  uncertain_filter, self_reward, ws_ensemble, wsc_filter, auxconf.
Report: weak-label accuracy per source (Table 2).
"""

from __future__ import annotations

from pathlib import Path

from pipelines.methods.registry import Labeller, Method, register
from training.examples import example

# method -> (label column, keep column or None for every row) in the SEAM labels
SOURCES = {
    "seam": ("weak_label", "kept"),  # SEAM: t(n_h) decision, tree-information filter
    "seam_no_filter": ("weak_label", None),
    "naive_w2s": ("naive_label", None),  # the weak model on the plain prompt (the paper's Naive W2S)
    "uncertain_filter": ("naive_label", "uncertain_keep"),
    "self_reward": ("self_reward_label", None),
    "ws_ensemble": ("ws_ensemble_label", None),
    "wsc_filter": ("naive_label", "wsc_keep"),
    "auxconf": ("auxconf_label", None),
}


def stage(cfg, log=print) -> dict:
    from pipelines.seam_annotate import seam_stage

    return seam_stage(cfg.root / "data" / "held_out", cfg.root / "weak_labels", cfg.seam, cfg.strong.spec,
                      cfg.strong.backend, cfg.weak.labelling(cfg.root).models[0], cfg.template, cfg.cluster,
                      log, cfg.seam_stage)


def read(labels_dir):
    from pipelines.seam_annotate import as_weak_labels

    return as_weak_labels(labels_dir)


def source_examples(method: str):
    column, keep = SOURCES[method]

    def examples(rows: list[dict], cfg) -> list[dict]:
        if rows and column not in rows[0]:
            raise ValueError(f"strong.methods: {method} needs weak labels made with annotate.method=seam")
        out = [example(r, range(len(r["options"])), cfg.template, target=int(r[column]), soft=None,
                        weak_labels=None, weak_probs=None, weight=1.0) for r in rows if keep is None or r[keep]]
        if not out:
            raise ValueError(f"no training examples for method {method}: its filter kept no row")
        return out

    examples.__name__ = examples.__qualname__ = f"{method}_examples"
    return examples


def check(cfg) -> None:
    """SEAM searches with the strong model's lm head and decides with one aligned weak model."""
    if len(cfg.weak.models) != 1:
        raise ValueError(f"annotate.method: seam uses one aligned weak model, weak.models has {len(cfg.weak.models)}")
    if cfg.strong.train.head != "lm":
        raise ValueError("strong.train.head: SEAM's strong model searches with the lm head")


def report(root: Path, metrics: dict) -> list[str]:
    from pipelines.seam_annotate import table2_markdown

    return ["Weak-label accuracy (%) on held_out by SEAM and its baselines (seed 000 Table 2), "
            f"strong {metrics['strong_spec']} searching, the weak model deciding:", "",
            table2_markdown(metrics["stages"]["weak_labels"]["table2"]), "", "![accuracy](accuracy.png)", ""]


register(Labeller("seam", "SEAM FF-tree search: the strong model thinks, the weak model decides (seed 000)",
                  stage, read, report=report, check=check))
for _name, (_col, _keep) in SOURCES.items():
    register(Method(_name, f"cross-entropy on SEAM's {_col}" + (f" where {_keep}" if _keep else ""),
                    source_examples(_name), labels="seam"))
