"""Reliability-aware alignment (seed 001): each held-out row is asked with its options in several
orders; the spread of the weak answers measures how reliable a weak label is.

Labeller `reliability` (annotate.method: reliability; pipelines/annotate.py streams it, the
formulas are pipelines/reliability.py): empirical answer distribution (Eq. 2), entropy S_ent
(Eq. 3), reliability S_prob per answer (Eq. 4, T = annotate.temperature), the label the most
frequent answer. The uncertainty filter keeps rows with S_ent <= the filter_percentile-th
percentile (section 4.2; `kept`, derived on read).
Methods:
  rel_filter    cross-entropy on the kept rows only, every option order one example
  rel_reweight  every (row, order) answer weighted by its S_prob (Eq. 5)
Report: weak-label accuracy by entropy (Fig. 3) and mean reliability by (weak answer, true
label) (Fig. 4), for every annotate labeller (naive and ensemble labels have one order per row).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.formatting import fmt
from pipelines.methods.registry import Labeller, Method, register
from training import losses as L
from training.examples import example


def annotate(cfg, log=print) -> dict:
    """The weak_labels stage of the annotate labellers (naive, ensemble, reliability)."""
    from pipelines.annotate import annotate_stage

    return annotate_stage(cfg.root / "data" / "held_out", cfg.root / "weak_labels", cfg.weak.labelling(cfg.root),
                          cfg.annotate, cfg.template, cfg.cluster, log)


def read(labels_dir):
    from pipelines.annotate import read_weak_labels

    return read_weak_labels(labels_dir)


def order_examples(rows: list[dict], cfg, reweight: bool) -> list[dict]:
    """One example per (row, weak answer): the options in the order that answer saw them, the
    answer as target; weight S_prob (Eq. 4) when reweighting, else 1 on the kept rows only."""
    if rows and not rows[0].get("perms"):
        raise ValueError("strong.methods: rel_* needs weak labels made with annotate.method=reliability")
    out = []
    for r in rows:
        if not reweight and not r["kept"]:
            continue  # section 4.2: only rows with S_ent <= tau
        perms = r["perms"]
        for i, answer in enumerate(r["answers"]):  # answers: model-major x option orders
            order = perms[i % len(perms)]
            out.append(example(r, order, cfg.template, target=list(order).index(answer), soft=None,
                                weak_labels=None, weak_probs=None, weight=r["reliability"][i] if reweight else 1.0))
    if not out:
        raise ValueError(f"no training examples for method rel_{'reweight' if reweight else 'filter'}")
    return out


def filter_examples(rows: list[dict], cfg) -> list[dict]:
    return order_examples(rows, cfg, reweight=False)


def reweight_examples(rows: list[dict], cfg) -> list[dict]:
    return order_examples(rows, cfg, reweight=True)


def reweight_loss(logp, logits, batch, ctx):
    """Eq. 5: (1/N) sum_i S_prob(x_i, a_i) CE(x_i, a_i) (training.losses.cross_entropy with weights)."""
    return L.cross_entropy(logp, batch["target"], batch["weight"]), {}


# ----------------------------------------------------------------------------- report


def entropy_buckets(table) -> list[dict]:
    """Weak-label accuracy per distinct entropy value (seed 001 Fig. 3), bucketed to 3 decimals."""
    ent = np.round(np.asarray(table["entropy"].to_pylist()), 3)
    ok = np.array([w == y for w, y in zip(table["weak_label"].to_pylist(), table["label"].to_pylist())])
    return [{"entropy": float(e), "correct": int(ok[ent == e].sum()), "wrong": int((~ok[ent == e]).sum()),
             "accuracy": float(ok[ent == e].mean())} for e in np.unique(ent)]


def reliability_matrix(table) -> tuple[np.ndarray, np.ndarray]:
    """Mean reliability S_prob of each answer by (weak answer, true label) (seed 001 Fig. 4)."""
    k = len(table["options"][0].as_py())
    total, count = np.zeros((k, k)), np.zeros((k, k))
    for answers, rel, y in zip(table["answers"].to_pylist(), table["reliability"].to_pylist(),
                               table["label"].to_pylist()):
        for a, s in zip(answers, rel):
            total[a, y] += s
            count[a, y] += 1
    with np.errstate(invalid="ignore"):
        return total / count, count


def plot_entropy(buckets: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(buckets))
    ax.bar(x, [b["correct"] for b in buckets], label="correct", color="#3a7")
    ax.bar(x, [b["wrong"] for b in buckets], bottom=[b["correct"] for b in buckets], label="wrong", color="#c33")
    for i, b in enumerate(buckets):
        ax.text(i, b["correct"] + b["wrong"], f"{b['accuracy']:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"{b['entropy']:.2f}" for b in buckets], fontsize=8)
    ax.set_xlabel("entropy of the weak answers (Eq. 3)")
    ax.set_ylabel("held-out rows")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(matrix: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = matrix.shape[0]
    letters = [chr(65 + i) for i in range(k)]
    fig, ax = plt.subplots(figsize=(1.2 * k + 2, 1.1 * k + 1.5))
    im = ax.imshow(np.nan_to_num(matrix), cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, "-" if np.isnan(matrix[i, j]) else f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(k), letters)
    ax.set_yticks(range(k), letters)
    ax.set_xlabel("true label")
    ax.set_ylabel("weak answer")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(root: Path, metrics: dict) -> list[str]:
    """Weak-label accuracy (kept / filtered halves) and the Fig. 3 / Fig. 4 plots."""
    wl = metrics["stages"].get("weak_labels", {})
    lines = [f"Weak-label accuracy on held_out: {fmt(wl.get('accuracy'))} (kept half "
             f"{fmt(wl.get('accuracy_kept'))}, filtered half {fmt(wl.get('accuracy_filtered'))}).", "",
             "![accuracy](accuracy.png)", ""]
    table = read(root / "weak_labels")
    if table["perms"][0].as_py():
        plot_entropy(entropy_buckets(table), root / "entropy_buckets.png")
        plot_reliability(reliability_matrix(table)[0], root / "reliability_heatmap.png")
        lines += ["Weak-label accuracy by entropy (seed 001 Fig. 3) and mean reliability by (weak answer, "
                  "true label) (Fig. 4):", "", "![entropy](entropy_buckets.png) ![reliability](reliability_heatmap.png)", ""]
    return lines


register(Labeller("reliability", "answers over option orders, Eq. 2-4, the uncertainty filter", annotate, read,
                  report=report))
register(Method("rel_filter", "cross-entropy on the rows the uncertainty filter keeps (section 4.2)",
                filter_examples, labels="reliability"))
register(Method("rel_reweight", "every answer weighted by its reliability (seed 001 Eq. 5)", reweight_examples,
                labels="reliability", loss=reweight_loss))
