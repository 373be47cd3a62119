"""Training examples built from data splits, weak labels or target texts (the methods of
pipelines/methods pick which rows and targets; these are the shapes the trainer reads).

An example is a rendered prompt with its option labels and targets in *shown-position* space
(position j of the prompt shows option order[j]); every loss picks the fields it needs:
  target       hard label (ground truth, or the weak label)
  soft         the weak ensemble's probabilities (soft cross-entropy, aux loss with soft targets)
  weak_labels  each weak model's argmax [N]           (seed 003 Eq. 2)
  weak_probs   each weak model's probabilities [N, K] (seed 003 Eq. 4)
  weight       per-example loss weight (seed 001 Eq. 5 reliability S_prob; 1 otherwise)
"""

from __future__ import annotations

import numpy as np

from actors.prompts import TemplateConfig, render

GROUND_TRUTH = "ground_truth"


def example(row: dict, order, template: TemplateConfig, **targets) -> dict:
    text, labels = render(row["prompt"], row["options"], order, template)
    return {"id": row["id"], "text": text, "labels": labels, **targets}


def ground_truth_examples(rows: list[dict], template: TemplateConfig) -> list[dict]:
    """Ceiling and weak supervisors: the true label, options in their original order."""
    out = []
    for r in rows:
        if r["label"] is None:
            continue
        k = len(r["options"])
        onehot = [0.0] * k
        onehot[r["label"]] = 1.0
        out.append(example(r, range(k), template, target=r["label"], soft=onehot, weak_labels=[r["label"]],
                            weak_probs=[onehot], weight=1.0))
    if not out:
        raise ValueError("no labelled rows to train on")
    return out


REWARD_WEIGHTS = ("none", "confidence", "reliability")


def reward_examples(rows: list[dict], fmt: str, target: str = "weak", weight_by: str = "none") -> list[dict]:
    """Preference pairs for the Bradley-Terry reward head: one text per response
    (fmt with {prompt} and {response}), the preferred one as target (the weak label, or the true
    label with target="truth"), weighted by 1, the weak confidence, or the mean reliability
    S_prob (seed 001 Eq. 4) of the weak answers that agree with the weak label."""
    if weight_by not in REWARD_WEIGHTS:
        raise ValueError(f"reward.weight_by: must be one of {REWARD_WEIGHTS}, got {weight_by!r}")
    out = []
    for r in rows:
        if len(r["options"]) != 2:
            raise ValueError(f"reward model: row {r['id']!r} has {len(r['options'])} responses; preference pairs have 2")
        label = r["label"] if target == "truth" else r["weak_label"]
        if label is None:
            continue
        weight = 1.0
        if weight_by == "confidence":
            weight = float(r["weak_conf"])
        elif weight_by == "reliability":
            if not r.get("perms"):
                raise ValueError("reward.weight_by: reliability needs weak labels made with annotate.method=reliability")
            agree = [s for a, s in zip(r["answers"], r["reliability"]) if a == label]
            weight = float(np.mean(agree)) if agree else 0.0
        texts = [fmt.replace("{prompt}", r["prompt"]).replace("{response}", o) for o in r["options"]]
        out.append({"id": r["id"], "texts": texts, "labels": list(r["options"]), "target": int(label),
                    "weight": weight})
    if not out:
        raise ValueError("reward model: no labelled preference pairs to train on")
    return out


# generation tasks (seed 003 section 4): what the strong model learns from the joint_labels rows
SEQUENCE_TARGETS = ("top_beam", "joint", "soft_tokens")


def sequence_examples(rows: list[dict], method: str, response_prefix: str = " ", soft: dict | None = None) -> list[dict]:
    """Target-text examples ({id, text: rendered prompt, response: prefix + target}) for the
    sequence trainer (TrainJob.answer="sequence"):
      ground_truth  the reference answer (the ceiling)
      top_beam      the first weak model's own top beam (naive W2S for generation)
      joint         the joint-decoding target (Eq. 6)
      soft_tokens   the joint target with token-level soft labels (Eq. 7-8): `soft` holds
                    {weak_toks, weak_prefixes, weights, strong_tok} for target_word_labels.
    Rows without a target (no candidate) are skipped."""
    from training.soft_labels import target_word_labels

    if method not in (GROUND_TRUTH, *SEQUENCE_TARGETS):
        raise ValueError(f"strong.methods: unknown generation method {method!r} (known: {SEQUENCE_TARGETS})")
    out = []
    for r in rows:
        target = {GROUND_TRUTH: r.get("reference"), "top_beam": (r.get("weak_top") or [None])[0]}.get(method, r.get("target"))
        if not target or not target.strip():
            continue
        ex = {"id": r["id"], "text": r["prompt"], "response": response_prefix + target, "target": 0, "weight": 1.0}
        if method == "soft_tokens":
            ex.update(target_word_labels(target, soft["weak_toks"], soft["weak_prefixes"], r["target_token_logps"],
                                         soft["strong_tok"], response_prefix, soft["weights"]))
        out.append(ex)
    if not out:
        raise ValueError(f"no training examples for method {method}: no row has a target text")
    return out


def lm_examples(rows: list[dict], template: TemplateConfig) -> list[dict]:
    """Burns et al.'s generative finetuning (seed 002, "UnSFT via LM loss"): the language-model
    loss on the task's unlabelled text, here each row's rendered prompt (question and options, no
    answer) as the target of a one-newline prompt; labels are never read."""
    out = [{"id": r["id"], "text": "\n", "response": render(r["prompt"], r["options"], range(len(r["options"])),
                                                             template)[0], "target": 0, "weight": 1.0} for r in rows]
    if not out:
        raise ValueError("no rows for the language-model finetuning")
    return out
