"""The method interface: how a method labels, what it trains on and with which loss, and its
section of the report. Each method module registers itself here; nothing else lists methods.

Two kinds of entries:

  Labeller  a way to make the weak labels (`annotate.method`, or `joint` on generation tasks):
            the weak_labels stage, how its output is read back, and its report section.
  Method    a way to train the strong model on those labels (`strong.methods`): which labeller
            it needs (`labels`: "any" for any choice labeller), its training examples, its loss,
            and optionally a report section.

A loss is `loss(logp, logits, batch, ctx) -> (loss, extra)` for option-choice heads and
`loss(logits, batch, ctx) -> (loss, extra)` for sequence targets (`answer="sequence"`); ctx is
the trainer's `LossContext` (step, total steps, train config, weak-model weights, gamma, lambda).
It must be a module-level function (Ray Train pickles it by reference into the workers).
None means the trainer's default for the head: cross-entropy on `target` (SFT on sequences).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Labeller:
    name: str  # the annotate.method value (or "joint")
    summary: str
    stage: Callable  # (cfg, log) -> the weak_labels stage's manifest
    read: Callable  # (labels_dir) -> pa.Table of weak-label rows
    task: str = "choice"  # choice | generation
    report: Callable | None = None  # (root, metrics) -> report.md lines
    check: Callable | None = None  # (run config) -> None; raises ValueError naming the dotted key


@dataclass(frozen=True)
class Method:
    name: str  # the strong.methods value and the strong_w2s/<name> folder
    summary: str
    examples: Callable  # (weak-label rows, cfg) -> training examples
    labels: str = "any"  # the labeller it needs ("any": every choice labeller)
    task: str = "choice"  # choice | generation
    loss: Callable | None = None
    answer: str | None = None  # None: template.answer; "sequence": target texts
    report: Callable | None = None  # (root, metrics) -> report.md lines


LABELLERS: dict[str, Labeller] = {}
METHODS: dict[str, Method] = {}


def register(entry):
    """Add a Labeller or a Method (by name); registering another entry under a taken name fails."""
    table = LABELLERS if isinstance(entry, Labeller) else METHODS
    if entry.name in table and table[entry.name] != entry:
        raise ValueError(f"method registry: {entry.name!r} is registered twice")
    table[entry.name] = entry
    return entry


def method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} (known: {', '.join(METHODS)})")
    return METHODS[name]


def labeller(name: str) -> Labeller:
    if name not in LABELLERS:
        raise ValueError(f"unknown labelling method {name!r} (known: {', '.join(LABELLERS)})")
    return LABELLERS[name]


def unfit(name: str, labels: str, task: str) -> str | None:
    """Why method `name` cannot train on labels made by `labels` on a `task` task (None: it can)."""
    m = method(name)
    if m.task != task:
        return f"{name} needs task: {m.task}"
    if m.labels not in ("any", labels):
        return f"{name} needs annotate.method: {m.labels}"
    return None
