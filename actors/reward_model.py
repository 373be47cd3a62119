"""Score with a W2S reward model directory: plain PyTorch through the HF backend, no Ray inside.

A reward model directory holds a Hugging Face `save_pretrained` model + tokenizer and
`w2s_reward.json`:

    {"kind": "bt", "format": "{prompt}\\n{response}", "chat": false, "max_length": 512}
    {"kind": "judge", "template": {<TemplateConfig fields>}, "max_length": 512}

bt     Bradley-Terry scalar reward model (sequence classifier, one label): r(x, y) = logits[0]
       on `format` filled with the prompt and response, tokenized as in training.
judge  a causal LM fine-tuned to choose between 2 options: P(a preferred over b) is the mean of
       P(a) over both option orders, which cancels position bias, so P(a, b) + P(b, a) = 1.

    scorer = RewardScorer.from_dir("runs/x/reward_model")
    scorer.score(["2+2?"], ["4"])               # bt only: [reward]
    scorer.compare(["2+2?"], ["4"], ["5"])      # [P(first preferred)]
    scorer.rank("2+2?", ["4", "5", "22"])       # {"scores", "order", "chosen", "rejected"}
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import numpy as np

from actors.backend import BackendConfig, ModelBackend
from actors.prompts import TemplateConfig, render, template_fields

META_FILE = "w2s_reward.json"
KINDS = ("bt", "judge")


def save_reward_meta(model_dir, kind: str, *, format: str = "{prompt}\n{response}", template: dict | None = None,
                     chat: bool = False, max_length: int = 512) -> Path:
    """Write `w2s_reward.json` next to a saved model; validates what a scorer will need."""
    if kind == "bt":
        meta = {"kind": kind, "format": format, "chat": chat, "max_length": max_length}
    elif kind == "judge":
        meta = {"kind": kind, "template": dict(template or {}), "max_length": max_length}
    else:
        raise ValueError(f"reward.kind: must be one of {KINDS}, got {kind!r}")
    _check_meta(meta, META_FILE)
    path = Path(model_dir) / META_FILE
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def read_reward_meta(model_dir) -> dict:
    """The validated `w2s_reward.json` of a reward model directory."""
    path = Path(model_dir) / META_FILE
    if not path.is_file():
        raise ValueError(f"model_dir: {model_dir} has no {META_FILE} (not a W2S reward model directory)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    _check_meta(meta, str(path))
    return meta


def _check_meta(meta, where: str) -> None:
    if not isinstance(meta, dict) or meta.get("kind") not in KINDS:
        got = meta.get("kind") if isinstance(meta, dict) else meta
        raise ValueError(f"{where}: kind must be one of {KINDS}, got {got!r}")
    max_length = meta.get("max_length", 512)
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 8:
        raise ValueError(f"{where}: max_length must be an int >= 8, got {max_length!r}")
    if meta["kind"] == "bt":
        fmt = meta.get("format", "{prompt}\n{response}")
        if not isinstance(fmt, str) or "{response}" not in fmt:
            raise ValueError(f"{where}: format must be a string containing {{response}}, got {fmt!r}")
        if not isinstance(meta.get("chat", False), bool):
            raise ValueError(f"{where}: chat must be true or false")
        return
    if not isinstance(meta.get("template"), dict):
        raise ValueError(f"{where}: template must be a mapping of TemplateConfig fields")
    known = {f.name for f in dataclasses.fields(TemplateConfig)}
    unknown = sorted(set(meta["template"]) - known)
    if unknown:
        raise ValueError(f"{where}: template.{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")
    try:
        TemplateConfig(**meta["template"])
    except ValueError as e:  # the class names its own field
        raise ValueError(f"template.{e}") from None


# ---- pure helpers shared by RewardScorer and the server (same numbers on both paths) ----

def preference(r_a: float, r_b: float) -> float:
    """Bradley-Terry P(a preferred over b) = sigmoid(r_a - r_b)."""
    d = r_a - r_b
    return 1 / (1 + math.exp(-d)) if d >= 0 else math.exp(d) / (1 + math.exp(d))


def round_robin(n: int) -> list[tuple[int, int]]:
    """Every unordered pair (i < j) of n responses: P(j over i) = 1 - P(i over j) for both kinds."""
    return list(itertools.combinations(range(n), 2))


def win_rates(n: int, pairs: list[tuple[int, int]], p_first: list[float]) -> list[float]:
    """Mean win probability of each response against every other one."""
    wins = [0.0] * n
    for (i, j), p in zip(pairs, p_first):
        wins[i] += p
        wins[j] += 1 - p
    return [w / (n - 1) for w in wins]


def regroup(flat: list, sizes: list[int]) -> list[list]:
    """`flat` cut into consecutive groups of `sizes` (the inverse of flattening rows of lists)."""
    cut = np.cumsum([0] + list(sizes))
    return [list(flat[cut[k]:cut[k + 1]]) for k in range(len(sizes))]


def ranking(scores: list[float]) -> dict:
    """Best first (ties: earlier index first); chosen = argmax, rejected = argmin (indices)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return {"scores": list(scores), "order": order, "chosen": order[0], "rejected": order[-1]}


class RewardScorer:
    """Scores (prompt, response) pairs with a bt reward model or pairwise judge, in this process."""

    def __init__(self, backend: ModelBackend, meta: dict, path: str = ""):
        self.backend, self.meta, self.path = backend, meta, path
        self.kind: str = meta["kind"]
        self.template = TemplateConfig(**meta["template"]) if self.kind == "judge" else None

    @classmethod
    def from_dir(cls, path, backend_cfg: BackendConfig | None = None) -> RewardScorer:
        """Load a reward model directory. backend_cfg: dtype / threads / batch budget; its head and
        max_length are set from the directory (classifier for bt, lm for judge; w2s_reward.json)."""
        from actors.base import make_backend

        meta = read_reward_meta(path)
        cfg = backend_cfg or BackendConfig()
        if meta["kind"] == "bt" and cfg.kind != "hf":
            raise ValueError("backend.kind: the vLLM backend does not serve scalar rewards; use backend.kind=hf")
        max_length = meta.get("max_length", 512)
        cfg = dataclasses.replace(cfg, head="classifier" if meta["kind"] == "bt" else "lm", max_length=max_length,
                                  max_batch_tokens=max(cfg.max_batch_tokens, max_length))
        return cls(make_backend(str(path), cfg), meta, str(path))

    def text(self, prompt: str, response: str) -> str:
        """The text a bt model scores: `format` filled exactly as training fills it."""
        fmt = self.meta.get("format", "{prompt}\n{response}")
        return fmt.replace("{prompt}", prompt).replace("{response}", response)

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Scalar reward per (prompt, response): bt reward models only."""
        _same_length(prompts=prompts, responses=responses)
        if self.kind != "bt":
            raise ValueError("score: scalar scores need a bt reward model; this is a pairwise judge "
                             "(use compare or rank)")
        if not prompts:
            return []
        texts = [self.text(p, r) for p, r in zip(prompts, responses)]
        return self.backend.rewards(texts, self.meta.get("chat", False))

    def compare(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        """P(a preferred over b) per prompt."""
        _same_length(prompts=prompts, a=a, b=b)
        if self.kind == "judge":
            return self.judge(prompts, a, b)
        r = self.score(list(prompts) * 2, list(a) + list(b))
        n = len(prompts)
        return [preference(r[i], r[n + i]) for i in range(n)]

    @property
    def options_hidden(self) -> bool:
        """The judge's prompt shows neither the options nor their names, so each response is
        scored as a continuation of the prompt alone: its score depends on nothing else, and there
        is no position to bias (configs/align.yaml's form)."""
        t = self.template
        return t is not None and t.answer == "text" and not {"options", "choices"} & template_fields(t.template)

    def _probs(self, prompts: list[str], options: list[list[str]], order=None) -> list:
        """The judge's probabilities over each row's options, shown in `order` (default as given)."""
        rows = [render(p, opts, order or range(len(opts)), self.template) for p, opts in zip(prompts, options)]
        if not rows:
            return []
        fn = self.backend.score_options if self.template.answer == "label" else self.backend.score_texts
        return fn([t for t, _ in rows], [s for _, s in rows], self.template.chat)

    def judge(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        """Judge P(a preferred over b): P(a) in both option orders, averaged (cancels position bias);
        one order when the options are hidden (both orders score the same texts)."""
        pairs = [[x, y] for x, y in zip(a, b)]
        if self.options_hidden:
            return [float(p[0]) for p in self._probs(prompts, pairs)]
        ab, ba = self._probs(prompts, pairs, (0, 1)), self._probs(prompts, pairs, (1, 0))
        # order (0, 1) shows a first; order (1, 0) shows a second
        return [float(p[0] + q[1]) / 2 for p, q in zip(ab, ba)]

    def rank(self, prompt: str, responses: list[str]) -> dict:
        """bt: rewards; judge: mean pairwise win probability (round robin). Best first."""
        return self.rank_rows([prompt], [responses])[0]

    def rank_rows(self, prompts: list[str], responses: list[list[str]]) -> list[dict]:
        """rank for many rows in one batched model call. A judge with hidden options scores each
        response once: with p = softmax of the row's scores, P(i over j) = p_i / (p_i + p_j) is
        exactly the pairwise judge's softmax over (s_i, s_j), at 1 / (n - 1) of its forward passes
        (6x fewer for n = 4)."""
        _same_length(prompts=prompts, responses=responses)
        bad = [len(r) for r in responses if len(r) < 2]
        if bad:
            raise ValueError(f"responses: rank needs at least 2 responses, got {bad[0]}")
        if self.kind == "bt":
            flat = self.score([p for p, rs in zip(prompts, responses) for _ in rs], [x for rs in responses for x in rs])
            return [ranking(r) for r in regroup(flat, [len(rs) for rs in responses])]
        pairs = [round_robin(len(rs)) for rs in responses]
        if self.options_hidden:
            probs = self._probs(prompts, responses)
            p_first = [[float(p[i] / (p[i] + p[j])) for i, j in pr] for p, pr in zip(probs, pairs)]
        else:
            flat = self.judge([p for p, pr in zip(prompts, pairs) for _ in pr],
                              [rs[i] for rs, pr in zip(responses, pairs) for i, _ in pr],
                              [rs[j] for rs, pr in zip(responses, pairs) for _, j in pr])
            p_first = regroup(flat, [len(pr) for pr in pairs])
        return [ranking(win_rates(len(rs), pr, p)) for rs, pr, p in zip(responses, pairs, p_first)]

    @property
    def tokens_seen(self) -> int:
        """Tokens run through the model so far (throughput accounting)."""
        return getattr(self.backend, "tokens_seen", 0)

    def info(self) -> dict:
        return {"kind": self.kind, "model": self.path, "max_length": self.meta.get("max_length", 512)}


def _same_length(**lists) -> None:
    sizes = {k: len(v) for k, v in lists.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"lists differ in length: {sizes}")
