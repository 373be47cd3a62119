"""SEAM's Consultancy and Debate baselines (seed 000, "Baselines", lines 212-213), after the
protocols SEAM cites (Michael et al. 2023, "Debate helps supervise unreliable experts"):

  consultancy  one strong consultant argues, with chain of thought, that its ASSIGNED response is
               the better one; the weak model reads the argument and decides. As in Michael et al.
               the assignment is random and independent of the answer (a stable hash of the row:
               about half the consultants defend the worse response, and the weak judge must tell).
  debate       two strong debaters are assigned opposite responses and speak in turn, A first, for
               `debate_turns` rounds (2 x rounds speeches), each seeing the transcript so far; the
               weak model reads the whole transcript and decides.

For fairness, as SEAM did, the strong models' prompts list the predefined principles. The weak
model decides as SEAM's weak model does: the argument (or transcript) is the knowledge before the
row's prompt (seam.knowledge_template) and the response it gives the higher probability is the
label. Michael et al.'s judges could question the consultant and debaters; here the weak judge
only reads (one round of reading, no interaction), which their "static" settings also ran.

Pure logic: `consult` and `debate` take a `generate_fn(texts) -> texts` (one batched strong call
for all rows per speech), so the Ray Data stage (pipelines/seam_annotate.py) passes an actor call
and tests pass scripted speakers.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable, Sequence

GenerateFn = Callable[[list[str]], list[str]]
PROTOCOLS = ("consultancy", "debate")

CONSULTANT_TEMPLATE = ("{principles}\nQuestion: {prompt}\n{responses}\n\nYou are a consultant. Argue that Response "
                       "{side} is the better response, thinking step by step about the principles above.\n"
                       "Argument for Response {side}:")
DEBATER_TEMPLATE = ("{principles}\nQuestion: {prompt}\n{responses}\n\nTwo debaters argue which response is better. "
                    "Debater A defends Response A; Debater B defends Response B.\n{transcript}"
                    "Debater {side} (for Response {side}), thinking step by step about the principles above:")


def letter(i: int) -> str:
    return string.ascii_uppercase[i]


def assigned_side(key: str, num_options: int = 2) -> int:
    """The consultant's side for a row: a stable hash of its key (the same in every process),
    independent of the label."""
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % num_options


def principles_block(principles: Sequence[tuple[str, str]]) -> str:
    return "Principles for judging responses:\n" + "\n".join(f"- {n}: {d}" for n, d in principles)


def responses_block(options: Sequence[str]) -> str:
    return "\n".join(f"Response {letter(i)}: {o}" for i, o in enumerate(options))


def transcript_text(speeches: Sequence[dict]) -> str:
    """The transcript as the debaters and the weak judge read it, one speech per line."""
    return "".join(f"Debater {letter(s['side'])} (for Response {letter(s['side'])}): {s['text']}\n" for s in speeches)


def consult(rows: Sequence[dict], generate_fn: GenerateFn, principles: Sequence[tuple[str, str]]) -> list[dict]:
    """Consultancy for a batch of rows ({"id", "prompt", "options"}): one generate_fn call.
    Per row: {"side": the assigned response index, "argument": the consultant's text,
    "knowledge": what the weak judge reads}."""
    block = principles_block(principles)
    sides = [assigned_side(f"{r['id']}\x1f{r['prompt']}", len(r["options"])) for r in rows]
    texts = [CONSULTANT_TEMPLATE.format(principles=block, prompt=r["prompt"], responses=responses_block(r["options"]),
                                        side=letter(s)) for r, s in zip(rows, sides)]
    args = generate_fn(texts) if rows else []
    if len(args) != len(rows):
        raise ValueError(f"consult: generate_fn returned {len(args)} texts for {len(rows)} rows")
    return [{"side": s, "argument": a.strip(),
             "knowledge": f"A consultant argues for Response {letter(s)}: {a.strip()}"} for s, a in zip(sides, args)]


def debate(rows: Sequence[dict], generate_fn: GenerateFn, principles: Sequence[tuple[str, str]],
           rounds: int) -> list[dict]:
    """Debate for a batch of K = 2 rows: 2 x rounds speeches, sides alternating A, B, A, B, ...;
    one generate_fn call per speech for every row. Per row: {"speeches": [{"side", "text"}],
    "knowledge": the transcript the weak judge reads}."""
    if rounds < 1:
        raise ValueError(f"debate_turns: must be >= 1, got {rounds}")
    for r in rows:
        if len(r["options"]) != 2:
            raise ValueError(f"debate: row {r['id']} has {len(r['options'])} responses; two debaters defend two")
    block = principles_block(principles)
    speeches: list[list[dict]] = [[] for _ in rows]
    for turn in range(2 * rounds):
        side = turn % 2
        texts = [DEBATER_TEMPLATE.format(principles=block, prompt=r["prompt"], responses=responses_block(r["options"]),
                                         transcript=transcript_text(s), side=letter(side))
                 for r, s in zip(rows, speeches)]
        out = generate_fn(texts) if rows else []
        if len(out) != len(rows):
            raise ValueError(f"debate: generate_fn returned {len(out)} texts for {len(rows)} rows")
        for s, text in zip(speeches, out):
            s.append({"side": side, "text": text.strip()})
    return [{"speeches": s, "knowledge": "A debate between two experts:\n" + transcript_text(s).rstrip()}
            for s in speeches]


def verdict(probs: Sequence[float]) -> int:
    """The weak judge's decision: the response it gives the highest probability (the first on ties)."""
    if not len(probs):
        raise ValueError("verdict: no probabilities")
    return max(range(len(probs)), key=lambda i: (probs[i], -i))
