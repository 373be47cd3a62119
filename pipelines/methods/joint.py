"""Weak-to-strong generation (seed 003 section 4): joint decoding of the weak ensemble (Eq. 6) as
the weak labels, the strong model trained on target texts.

Labeller `joint` (task: generation): every weak model proposes its top M beams, every candidate is
scored by every weak model, the largest sum_i lambda_i P(y | theta_i) is the target (the stage:
pipelines/joint_annotate.py, the pure logic: pipelines/joint_decoding.py).
Methods (SFT on a target text, or token-level soft labels):
  top_beam     SFT on the first weak model's own top beam (naive W2S for generation)
  joint        SFT on the joint-decoding target
  soft_tokens  the joint target with token-level soft labels (Eq. 7-8) across tokenizers; the
               per-token loss CE (Eq. 1) or EDL (Eq. 5), strong.train.soft_*
Report: EM / token F1 of the joint target and each weak model's top beam on held_out.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.methods.registry import Labeller, Method, register
from training.examples import sequence_examples
from training.soft_labels import token_soft_label_loss


def stage(cfg, log=print) -> dict:
    from pipelines.joint_annotate import joint_stage

    return joint_stage(cfg.root / "data" / "held_out", cfg.root / "weak_labels", cfg.weak.models, cfg.joint,
                       cfg.cluster, log)


def read(labels_dir):
    import pyarrow.parquet as pq

    return pq.read_table(Path(labels_dir) / "joint_labels.parquet")


def soft_context(cfg) -> dict:
    """Tokenizers and weights the token-level soft labels need (the driver builds the targets)."""
    from actors.registry import load_tokenizer
    from pipelines.joint_annotate import continuation

    ms = cfg.weak.models
    return {"weak_toks": [load_tokenizer(m.spec) for m in ms],
            "weak_prefixes": [continuation("", m.chat) for m in ms],
            "weights": cfg.joint.resolved_weights(len(ms)), "strong_tok": load_tokenizer(cfg.strong.spec)}


def top_beam_examples(rows: list[dict], cfg) -> list[dict]:
    return sequence_examples(rows, "top_beam")


def joint_examples(rows: list[dict], cfg) -> list[dict]:
    return sequence_examples(rows, "joint")


def soft_token_examples(rows: list[dict], cfg) -> list[dict]:
    return sequence_examples(rows, "soft_tokens", soft=soft_context(cfg))


def soft_token_loss(logits, batch, ctx):
    """Seed 003 section 4.2: per target token, the soft label of its word split onto the strong
    tokens (strong.train.soft_split), CE or EDL (soft_loss) with gamma and the annealed lambda."""
    t = ctx.train
    targets = batch["input_ids"][:, -logits.shape[1]:]
    loss = token_soft_label_loss(logits, targets, batch["token_word"], batch["word_logp"], loss=t.soft_loss,
                                 split=t.soft_split, gamma=ctx.gamma, lam=ctx.lam, kl_coef=t.soft_kl_coef,
                                 clamp_max=t.soft_clamp_max or None)
    return loss, {"gamma": ctx.gamma, "lambda_t": ctx.lam}


def report(root: Path, metrics: dict) -> list[str]:
    from pipelines.joint_annotate import metrics_markdown

    ev = metrics["evaluation"]
    return ["Weak labels on held_out: joint decoding (Eq. 6) against each weak model's own top beam, "
            "scored against the references:", "", metrics_markdown(metrics["stages"]["weak_labels"]), "",
            f"Test: exact match {json.dumps({k: round(v, 3) for k, v in ev['em'].items()})}.", "",
            "![token F1](accuracy.png)", ""]


register(Labeller("joint", "joint decoding of the weak ensemble (seed 003 Eq. 6)", stage, read, task="generation",
                  report=report))
register(Method("top_beam", "SFT on the first weak model's top beam", top_beam_examples, labels="joint",
                task="generation", answer="sequence"))
register(Method("joint", "SFT on the joint-decoding target (Eq. 6)", joint_examples, labels="joint",
                task="generation", answer="sequence"))
register(Method("soft_tokens", "token-level soft labels on the joint target (Eq. 7-8)", soft_token_examples,
                labels="joint", task="generation", answer="sequence", loss=soft_token_loss))
