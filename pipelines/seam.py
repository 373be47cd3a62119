"""SEAM (seed 000, Li et al.): principle FF-trees searched by the strong model, weak model annotates.

Pure, batched logic: no Ray and no models here. The models are reached only through
`expand_fn(requests) -> results`, which `search` calls once per phase of a search step with the
requests of ALL rows still searching (never one row at a time). Each call holds one kind:

  weights  strong: P(next principle) over the remaining principles P \\ c(n_i) (Eq. 5). `text` is the
           full prompt; `options` are the candidate principle names, answered by the letter labels
           A, B, ... in that order (see `model_inputs`). Result: one probability per candidate.
           With seam.shuffle_principles a row asks seam.principle_orders of these per node, each
           listing the candidates in another order (see "Principle order" below).
  thought  strong: the principle-aware thought t(n) for the chain c(n), from in-context
           demonstrations. `text` is the full prompt. Result: the generated text (str).
  entropy  strong: P(response | x, t(n)) for H(x, t(n)). `text` is the row's prompt with the thought
           prepended; render it with the run's TemplateConfig over `options` (the responses, in the
           row's order). Result: one probability per response.
  decide   weak: P(response | x, knowledge) for the final label y = argmax. Same shape as entropy.

The search follows the paper's "searching-while-thinking" ST-tree:
  node n = (c(n), t(n), i(n)); root: empty chain, no thought, H = H_init, so i(root) = 0.
  Rule 1  best-first: go to the child whose edge weight w(e) (Eq. 5) is highest.
  Rule 2  backtrace: if i(child) < i(current), drop the child and go back to the current node
          (its next-best child is tried on the next step; the edge weights are reused).
  Rule 3  one backtrace per level: a second backtrace condition at the same level stops the
          search; that last child stays on the path (Fig. 3: n2, n4, n6 are retained).
  The search also stops at seam.max_depth principles or when no untried principle is left.
The FF-tree is the final path. The weak model gets t(n_h), n_h the deepest path node with an
information gain over its predecessor; rows are then filtered at dataset level by tree
information (mean score of those nodes), dropping the lowest seam.filter_percentile %.

Information-score sign. The paper's printed formula is i(n) = H(x, t(n)) - H_init(x), but the text
defines the score as "the decrease of the information entropy of node n compared to the initial
entropy", because "entropy reduction represents an increase in information". With two responses
H_init = 1 bit is the maximum, so the printed formula would be <= 0 everywhere and largest for the
least informative thought, which contradicts Rule 2 (backtrace when information drops), n_h ("information
gain") and the filter (drop the lowest information). We implement the text:
    i(n) = H_init(x) - H(x, t(n))   (bits; 0 for no information, 1 for a certain decision).

Principle order (not in the paper). A small strong model puts most of its mass on the letter A,
so by default (candidates listed in file order) Rule 1 follows the file order. seam.shuffle_principles
lists the candidates in a per-(row, node) order (a stable hash of the row's prompt, its responses and
the chain: the same everywhere and in every process); seam.principle_orders = n asks n rotations of that
order (spread evenly, so with n = |P \\ c(n_i)| each principle sits once at every letter) in the same
expand call. Each answer is renormalised over the candidates, mapped back to principle names and the
n are averaged; ties in Rule 1 then follow the row's shuffled order instead of the file order.

Ablations (Table 3) are cumulative, as in the paper ("each module is removed incrementally"):
  no_filter     no tree-information filter.
  no_backtrace  + Rules 2 and 3 off: greedy best-first to max_depth (Rule 3's stop only exists as a
                limit on backtraces, so it goes with them). Scores are still computed for n_h.
  no_pat        + the weak model gets only the principle chain c(n_h), not the thought.
  no_fftree     + no tree: one strong thought without principles or demonstrations, always passed
                to the weak model.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actors.prompts import TemplateConfig, render

ABLATIONS = ("none", "no_filter", "no_backtrace", "no_pat", "no_fftree")
KINDS = ("weights", "thought", "entropy", "decide")
REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- principles and demonstrations

@dataclass(frozen=True)
class Principle:
    name: str
    description: str


@dataclass(frozen=True)
class Demonstration:
    principle: str
    question: str
    responses: tuple[str, ...]
    thought: str


@dataclass(frozen=True)
class PrincipleSet:
    """P = {p_1..p_m} in file order and the demonstration pool D, one d_i per principle."""
    principles: tuple[Principle, ...]
    demonstrations: dict[str, Demonstration]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.principles]

    def description(self, name: str) -> str:
        return next(p.description for p in self.principles if p.name == name)


def _text(item: dict, key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}.{key}: must be a non-empty string")
    return value.strip()


def _mapping(item, keys: set[str], where: str) -> dict:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: must be a mapping with {sorted(keys)}")
    unknown = sorted(set(item) - keys)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(sorted(keys))})")
    return item


def load_principles(path: str | Path) -> PrincipleSet:
    """Read and validate a principles YAML (configs/seam_principles.yaml). ValueError names the field."""
    from cluster.loader import load_yaml

    data = _mapping(load_yaml(resolve_path(path)), {"principles", "demonstrations"}, "principles file")
    raw = data.get("principles")
    if not isinstance(raw, list) or not raw:
        raise ValueError("principles: must be a non-empty list")
    principles = []
    for i, item in enumerate(raw):
        where = f"principles[{i}]"
        item = _mapping(item, {"name", "description"}, where)
        p = Principle(_text(item, "name", where), _text(item, "description", where))
        if p.name in {q.name for q in principles}:
            raise ValueError(f"{where}.name: duplicate principle {p.name!r}")
        principles.append(p)
    names = [p.name for p in principles]
    raw = data.get("demonstrations")
    if not isinstance(raw, list):
        raise ValueError("demonstrations: must be a list with one demonstration per principle")
    demos: dict[str, Demonstration] = {}
    for i, item in enumerate(raw):
        where = f"demonstrations[{i}]"
        item = _mapping(item, {"principle", "question", "responses", "thought"}, where)
        name = _text(item, "principle", where)
        if name not in names:
            raise ValueError(f"{where}.principle: {name!r} is not a principle (known: {', '.join(names)})")
        if name in demos:
            raise ValueError(f"{where}.principle: a second demonstration for {name!r} (one per principle)")
        resp = item.get("responses")
        if not isinstance(resp, list) or len(resp) < 2 or not all(isinstance(r, str) and r.strip() for r in resp):
            raise ValueError(f"{where}.responses: must be a list of at least 2 non-empty strings")
        demos[name] = Demonstration(name, _text(item, "question", where), tuple(r.strip() for r in resp),
                                    _text(item, "thought", where))
    missing = [n for n in names if n not in demos]
    if missing:
        raise ValueError(f"demonstrations: no demonstration for principle {missing[0]!r} (one per principle)")
    return PrincipleSet(tuple(principles), demos)


def resolve_path(path: str | Path) -> Path:
    """A relative path is taken from the working directory, else from the repository root
    (Ray tasks may run elsewhere)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p


# ---------------------------------------------------------------- config

_FIELDS = ("prompt", "responses", "principles", "descriptions", "demonstrations", "candidates", "question",
           "thought", "knowledge", "label", "response", "name", "description")
_FIELD = re.compile(r"\{(" + "|".join(_FIELDS) + r")\}")


def fill(template: str, **fields: str) -> str:
    """Substitute {field}s in one pass, so braces inside user text are left alone."""
    return _FIELD.sub(lambda m: fields[m.group(1)] if m.group(1) in fields else m.group(0), template)


@dataclass
class SeamConfig:
    principles_path: str = "configs/seam_principles.yaml"
    max_depth: int = 4  # most principles on a chain (search depth)
    filter_percentile: float = 50.0  # dataset filter: drop this % of rows with the lowest tree information
    ablation: str = "none"  # none | no_filter | no_backtrace | no_pat | no_fftree (cumulative, Table 3)
    thought_max_new_tokens: int = 128  # strong generation length for t(n)
    # a thought is cut at the first of these (a base model goes on with the next demonstration)
    thought_stop: list[str] = field(default_factory=lambda: ["\n\n", "\nQuestion:"])
    # a response as shown to the strong model in the weights/thought prompts ({label}: A, B, ...)
    response_line: str = "Response {label}: {response}"
    # Eq. 5 prompt: the remaining principles P \ c(n_i), one {candidate_line} each, answered by the
    # letter of the next principle. {principles}: the chain so far ("none" at the root), optional.
    weights_template: str = ("Question: {prompt}\n{responses}\n\nPrinciples for judging which response is better:\n"
                             "{candidates}\nWhich principle matters most here? Answer with its letter.\nAnswer:")
    candidate_line: str = "{label}. {name}: {description}"
    # one in-context demonstration d_i per principle in c(n), in chain order
    demo_template: str = "Question: {question}\n{responses}\nPrinciples: {principles}\nThought: {thought}\n\n"
    # strong thought t(n) for chain c(n) ({principles}: "p1 -> p2"; {descriptions}: one line each)
    thought_template: str = ("{demonstrations}Question: {prompt}\n{responses}\nPrinciples: {principles}\n"
                             "Thought:")
    # ablation no_fftree: one strong thought without principles or demonstrations
    plain_thought_template: str = ("Question: {prompt}\n{responses}\nAnalyse the two responses and state the "
                                   "knowledge needed to judge which one is better.\nThought:")
    # what a model sees before the row's prompt when it scores the responses: strong for H(x, t(n)),
    # weak for the decision. The result is rendered with the run's TemplateConfig.
    knowledge_template: str = "Background knowledge: {knowledge}\n\n{prompt}"
    # ablation no_pat: the knowledge is the chain c(n_h) alone
    chain_template: str = "Principles to consider, in order: {principles}."
    # Eq. 5 position bias: list the remaining principles in a seeded per-(row, node) order instead of
    # file order, and average the weights over principle_orders such orders (rotations of it)
    shuffle_principles: bool = False
    principle_orders: int = 1
    # Consultancy / Debate baselines (pipelines/debate.py; Michael et al. 2023): [] = off, they
    # cost one strong generation per row (consultancy) and 2 x debate_turns (debate)
    protocols: list[str] = field(default_factory=list)
    debate_turns: int = 2  # rounds; each round one speech per debater
    argument_max_new_tokens: int = 64
    argument_stop: list[str] = field(default_factory=lambda: ["\n\n", "\nDebater", "\nQuestion:"])

    def __post_init__(self):
        if not self.principles_path:
            raise ValueError("principles_path: must be a non-empty path")
        if self.max_depth < 1:
            raise ValueError("max_depth: must be >= 1")
        if not 0 <= self.filter_percentile < 100:
            raise ValueError("filter_percentile: must be in [0, 100)")
        if self.ablation not in ABLATIONS:
            raise ValueError(f"ablation: must be one of {ABLATIONS}, got {self.ablation!r}")
        if self.thought_max_new_tokens < 1:
            raise ValueError("thought_max_new_tokens: must be >= 1")
        if not all(isinstance(s, str) and s for s in self.thought_stop):
            raise ValueError("thought_stop: must hold non-empty strings")
        if not isinstance(self.shuffle_principles, bool):
            raise ValueError(f"shuffle_principles: must be true or false, got {self.shuffle_principles!r}")
        if isinstance(self.principle_orders, bool) or not isinstance(self.principle_orders, int) \
                or self.principle_orders < 1:
            raise ValueError(f"principle_orders: must be an integer >= 1, got {self.principle_orders!r}")
        if self.principle_orders > 1 and not self.shuffle_principles:
            raise ValueError("principle_orders: > 1 needs seam.shuffle_principles: true "
                             "(file order asked again gives the same answer)")
        from pipelines.debate import PROTOCOLS

        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or len(set(self.protocols)) != len(self.protocols):
            raise ValueError(f"protocols: each of {PROTOCOLS} at most once, got {self.protocols!r}")
        if self.debate_turns < 1:
            raise ValueError("debate_turns: must be >= 1")
        if self.argument_max_new_tokens < 1:
            raise ValueError("argument_max_new_tokens: must be >= 1")
        if not all(isinstance(x, str) and x for x in self.argument_stop):
            raise ValueError("argument_stop: must hold non-empty strings")
        need = {"response_line": ("label", "response"), "weights_template": ("prompt", "candidates"),
                "candidate_line": ("label", "name"), "demo_template": ("question", "responses", "thought"),
                "thought_template": ("prompt", "responses", "principles"),
                "plain_thought_template": ("prompt", "responses"), "knowledge_template": ("knowledge", "prompt"),
                "chain_template": ("principles",)}
        for name, fields in need.items():
            missing = [f for f in fields if "{" + f + "}" not in getattr(self, name)]
            if missing:
                raise ValueError(f"{name}: must contain {{{missing[0]}}}")

    # cumulative ablations: each level removes one more module (Table 3)
    @property
    def use_filter(self) -> bool:
        return self.ablation == "none"

    @property
    def use_backtrace(self) -> bool:
        return self.ablation in ("none", "no_filter")

    @property
    def use_pat(self) -> bool:
        return self.ablation in ("none", "no_filter", "no_backtrace")

    @property
    def use_fftree(self) -> bool:
        return self.ablation != "no_fftree"


# ---------------------------------------------------------------- formulas

def entropy(probs: Sequence[float]) -> float:
    """H = -sum_r p(r) log2 p(r) over the responses (seed 000, H(x, t(n))), in bits; 0 log 0 = 0.
    probs are renormalised first (model scores drift from summing to exactly 1)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.size < 2 or not np.all(np.isfinite(p)) or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"entropy: need >= 2 non-negative probabilities, got {list(probs)}")
    p = p / p.sum()
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def binary_entropy(p: float) -> float:
    """H(p) = -p log2 p - (1 - p) log2 (1 - p): two responses, P(r_1) = p."""
    return entropy([p, 1.0 - p])


def initial_entropy(num_responses: int = 2) -> float:
    """H_init(x) = -sum (1/K) log2 (1/K) = log2 K: equal probabilities with no thought (1 bit for K = 2)."""
    return math.log2(num_responses)


def information_score(h_node: float, h_init: float = 1.0) -> float:
    """i(n) = H_init(x) - H(x, t(n)): the entropy *decrease* a thought brings (seed 000, "entropy
    reduction represents an increase in information"). The printed H(x,t(n)) - H_init(x) has the
    opposite sign; see the module docstring. Positive when the thought makes the choice more certain."""
    return h_init - h_node


def edge_weights(first_token_probs: Sequence[float], remaining: Sequence[str]) -> dict[str, float]:
    """Eq. 5: w(n_i, n_j) = p_Ms(c_-1(n_j) | x, P \\ c(n_i)), one per remaining principle.

    first_token_probs[k]: the strong model's probability of the first answer token naming
    remaining[k]. Renormalised over the remaining set, so the weights are transition probabilities
    out of n_i (only their order matters for Rule 1)."""
    p = np.asarray(first_token_probs, dtype=np.float64)
    if p.shape != (len(remaining),):
        raise ValueError(f"edge_weights: {p.size} probabilities for {len(remaining)} principles")
    if not np.all(np.isfinite(p)) or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"edge_weights: probabilities must be finite, >= 0 and not all 0, got {p.tolist()}")
    return dict(zip(remaining, (p / p.sum()).tolist()))


def gains(path: Sequence[float]) -> list[bool]:
    """Per path node (root first): does it show information gain over its predecessor, i(n_k) > i(n_k-1)?
    The root has no predecessor (False)."""
    return [False] + [path[k] > path[k - 1] for k in range(1, len(path))]


def select_hidden_node(path: Sequence[float]) -> int | None:
    """n_h: the deepest node with information gain over its predecessor (root excluded).

    path: i(n) along the FF-tree path, root (i = 0) first. Returns its index in path, or None when no
    node gains (the weak model then decides without knowledge). Fig. 3 (b): scores of n2, n4, n6 ->
    n2 and n4 gain, n6 does not -> n4."""
    valid = [k for k, g in enumerate(gains(path)) if g]
    return valid[-1] if valid else None


def tree_information(path: Sequence[float]) -> float:
    """FF-tree information: mean i(n) over the valid nodes (those with gain over their predecessor);
    Fig. 3 (b): (i(n2) + i(n4)) / 2. 0.0 when no node gains (the tree adds no information)."""
    vals = [s for s, g in zip(path, gains(path)) if g]
    return float(np.mean(vals)) if vals else 0.0


def tree_filter(scores: Sequence[float], percentile: float = 50.0) -> np.ndarray:
    """Dataset-level filter: drop the floor(percentile% * n) rows with the lowest tree information.

    Returns a boolean keep mask. Exact count (ties broken by row order: earlier rows kept), so the
    kept share does not depend on ties."""
    s = np.asarray(scores, dtype=np.float64)
    n_drop = int(math.floor(percentile / 100.0 * len(s)))
    order = np.lexsort((np.arange(len(s)), -s))  # highest first, then row order
    keep = np.zeros(len(s), dtype=bool)
    keep[order[: len(s) - n_drop]] = True
    return keep


def filter_mask(scores: Sequence[float], cfg: SeamConfig) -> np.ndarray:
    """tree_filter per config; every row kept when the ablation removes the filter."""
    if not cfg.use_filter:
        return np.ones(len(scores), dtype=bool)
    return tree_filter(scores, cfg.filter_percentile)


def clean_thought(text: str, stops: Sequence[str]) -> str:
    """A generated thought cut at the first stop string, whitespace stripped."""
    text = text.lstrip()
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut].strip()


# ---------------------------------------------------------------- baselines (seed 000, "Baselines")
# probability arrays: shape (rows, K), each row a distribution over the responses

def _probs(p) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"baselines: probabilities must have shape (rows, K >= 2), got {p.shape}")
    return p


def self_reward(strong_probs) -> np.ndarray:
    """Self-Reward: the strong model labels D_held itself, y = argmax_r p_Ms(r | x)."""
    return _probs(strong_probs).argmax(1)


def ws_ensemble(strong_probs, weak_probs) -> tuple[np.ndarray, np.ndarray]:
    """WS-Ensemble: average the two models' predictions, p = (p_Ms + p_Mw) / 2; y = argmax p.
    Returns (labels, p)."""
    p = (_probs(strong_probs) + _probs(weak_probs)) / 2.0
    return p.argmax(1), p


def wsc_filter(strong_probs, weak_probs) -> tuple[np.ndarray, np.ndarray]:
    """WSC Filter: keep the weak labels where strong and weak argmax agree. Returns (weak labels, keep)."""
    weak = _probs(weak_probs).argmax(1)
    return weak, weak == _probs(strong_probs).argmax(1)


def auxconf_correction(strong_probs, weak_probs, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """AuxConf (as a label correction): the weak label, replaced by the strong argmax where the strong
    model's confidence max_r p_Ms(r | x) is higher than the threshold. Returns (labels, corrected)."""
    s, w = _probs(strong_probs), _probs(weak_probs)
    labels, strong = w.argmax(1), s.argmax(1)
    confident = s.max(1) > threshold
    corrected = confident & (strong != labels)
    return np.where(confident, strong, labels), corrected


# ---------------------------------------------------------------- search state

@dataclass
class Node:
    """n = (c(n), t(n), i(n)); weight: w(e) of the edge into it (Eq. 5); None at the root."""
    chain: tuple[str, ...]
    weight: float | None = None
    thought: str | None = None
    probs: list[float] | None = None  # strong P(response | x, t(n))
    entropy: float = 0.0
    score: float = 0.0
    backtraced: bool = False  # Rule 2 dropped it from the path

    @property
    def depth(self) -> int:
        return len(self.chain)

    def to_dict(self) -> dict:
        return {"chain": list(self.chain), "depth": self.depth, "weight": self.weight, "thought": self.thought,
                "probs": self.probs, "entropy": self.entropy, "score": self.score, "backtraced": self.backtraced}


@dataclass
class SearchState:
    """One row's search. path[0] is the root; path[-1] the current node."""
    row: int
    prompt: str
    options: tuple[str, ...]
    path: list[Node]
    expanded: list[Node] = field(default_factory=list)  # every scored node, in order (kept for inspection)
    weights: dict[str, float] | None = None  # edge weights out of path[-1]; reused after a backtrace
    tried: set[str] = field(default_factory=set)  # children of path[-1] already scored
    backtraces: Counter = field(default_factory=Counter)  # level (child depth) -> backtraces there
    pending: Node | None = None  # the child being scored this step
    stopped: bool = False
    stop_reason: str | None = None

    def stop(self, reason: str) -> None:
        self.stopped, self.stop_reason, self.pending = True, reason, None


@dataclass(frozen=True)
class Request:
    """One row's ask in an expand call (see the module docstring for each kind's contract)."""
    row: int  # index into the rows given to search()
    kind: str  # weights | thought | entropy | decide
    chain: tuple[str, ...]  # weights: c(n_i); thought/entropy: c(n_j); decide: c(n_h) (empty: none)
    text: str  # weights/thought: the whole prompt; entropy/decide: the prompt before option rendering
    options: tuple[str, ...] = ()  # weights: candidate principle names; entropy/decide: the responses
    thought: str | None = None  # entropy/decide: the thought the model is given, if any

    @property
    def model(self) -> str:
        return "weak" if self.kind == "decide" else "strong"


def model_inputs(requests: Sequence[Request], template: TemplateConfig) -> tuple[list[str], list[list[str]] | None]:
    """Backend inputs for one expand call: (texts, labels). thought: labels None -> `generate(texts,
    max_new_tokens=seam.thought_max_new_tokens)`; weights: letter labels A, B, ... per candidate ->
    `score_options(texts, labels, template.chat, "label")`; entropy/decide: the prompt rendered with
    the options in the row's order -> `score_options(texts, labels, template.chat, template.answer)`."""
    kind = requests[0].kind
    if any(r.kind != kind for r in requests):
        raise ValueError("model_inputs: one expand call holds one kind of request")
    texts = [r.text for r in requests]
    if kind == "thought":
        return texts, None
    if kind == "weights":
        return texts, [[template.label_prefix + a for a in _letters(len(r.options))] for r in requests]
    rendered = [render(r.text, r.options, range(len(r.options)), template) for r in requests]
    return [t for t, _ in rendered], [lab for _, lab in rendered]


def _letters(n: int) -> list[str]:
    if n > 26:
        raise ValueError(f"at most 26 candidates, got {n}")
    return list(string.ascii_uppercase[:n])


# ---------------------------------------------------------------- prompt building

def _responses(options: Sequence[str], cfg: SeamConfig) -> str:
    return "\n".join(fill(cfg.response_line, label=a, response=r) for a, r in zip(_letters(len(options)), options))


def _chain_text(chain: Sequence[str]) -> str:
    return " -> ".join(chain)


def shuffled_orders(remaining: Sequence[str], key: Sequence, n: int = 1) -> list[tuple[str, ...]]:
    """The orders in which a node's remaining principles are listed when seam.shuffle_principles is on.

    The base order sorts the principles by sha256(key, name): a seeded shuffle that is the same in every
    process (no salted hash(), no RNG version). key: what identifies the (row, node), e.g. (prompt,
    responses, chain). Then min(n, m) rotations of it (m = len(remaining)), at offsets spread evenly
    over the m positions: distinct orders, and with n >= m every principle once at every position."""
    head = json.dumps(list(key), ensure_ascii=False)
    base = sorted(remaining, key=lambda name: hashlib.sha256(
        json.dumps([head, name], ensure_ascii=False).encode()).hexdigest())
    m = len(base)
    k = min(n, m)
    return [tuple(base[o:] + base[:o]) for o in (i * m // k for i in range(k))]


def weights_requests(s: SearchState, ps: PrincipleSet, cfg: SeamConfig) -> list[Request]:
    """The node's Eq. 5 asks: one in file order, or with seam.shuffle_principles one per principle order."""
    chain = s.path[-1].chain
    remaining = [n for n in ps.names if n not in chain]
    if not cfg.shuffle_principles:
        return [_weights_request(s, chain, remaining, ps, cfg)]
    orders = shuffled_orders(remaining, (s.prompt, list(s.options), list(chain)), cfg.principle_orders)
    return [_weights_request(s, chain, order, ps, cfg) for order in orders]


def weights_request(s: SearchState, ps: PrincipleSet, cfg: SeamConfig) -> Request:
    """The (first) Eq. 5 ask of the node: file order, or the row's first shuffled order."""
    return weights_requests(s, ps, cfg)[0]


def _weights_request(s: SearchState, chain: tuple[str, ...], listed: Sequence[str], ps: PrincipleSet,
                     cfg: SeamConfig) -> Request:
    lines = "\n".join(fill(cfg.candidate_line, label=a, name=n, description=ps.description(n))
                      for a, n in zip(_letters(len(listed)), listed))
    text = fill(cfg.weights_template, prompt=s.prompt, responses=_responses(s.options, cfg), candidates=lines,
                principles=_chain_text(chain) or "none")
    return Request(s.row, "weights", chain, text, tuple(listed))


def merged_edge_weights(asked: Sequence[tuple[Sequence[str], Sequence[float]]]) -> dict[str, float]:
    """Eq. 5 weights from one or more orders: [(listed principle names, their letter probabilities)].

    Each answer is renormalised over its candidates (`edge_weights`, keyed by principle name, so the
    letters are mapped back), then the orders are averaged per principle. The result is keyed in the
    first order's sequence (Rule 1 ties follow it). One order: exactly `edge_weights`."""
    if len(asked) == 1:
        return edge_weights(asked[0][1], asked[0][0])
    per = [edge_weights(p, names) for names, p in asked]
    first = list(asked[0][0])
    if any(sorted(w) != sorted(first) for w in per):
        raise ValueError("merged_edge_weights: every order must list the same principles")
    # fsum: the same multiset of values gives the same mean in any order (exact ties stay ties)
    return edge_weights([math.fsum(w[n] for w in per) / len(per) for n in first], first)


def thought_request(s: SearchState, ps: PrincipleSet, cfg: SeamConfig) -> Request:
    chain = s.pending.chain
    demos = "".join(
        fill(cfg.demo_template, question=d.question, responses=_responses(d.responses, cfg), principles=d.principle,
             thought=d.thought)
        for d in (ps.demonstrations[n] for n in chain))
    text = fill(cfg.thought_template, demonstrations=demos, prompt=s.prompt, responses=_responses(s.options, cfg),
                principles=_chain_text(chain),
                descriptions="\n".join(f"- {n}: {ps.description(n)}" for n in chain))
    return Request(s.row, "thought", chain, text)


def with_knowledge(prompt: str, knowledge: str | None, cfg: SeamConfig) -> str:
    """The row's prompt with knowledge before it; unchanged when there is none."""
    return fill(cfg.knowledge_template, knowledge=knowledge, prompt=prompt) if knowledge else prompt


def entropy_request(s: SearchState, cfg: SeamConfig) -> Request:
    n = s.pending
    return Request(s.row, "entropy", n.chain, with_knowledge(s.prompt, n.thought, cfg), s.options, n.thought)


# ---------------------------------------------------------------- the batched driver

class _Caller:
    """Calls expand_fn with one phase's requests, checks the results, counts calls and requests."""

    def __init__(self, expand_fn: Callable[[list[Request]], list]):
        self.expand_fn = expand_fn
        self.calls: Counter = Counter()
        self.requests: Counter = Counter()

    def __call__(self, requests: list[Request]) -> list:
        kind = requests[0].kind
        results = list(self.expand_fn(requests))
        if len(results) != len(requests):
            raise ValueError(f"expand_fn: {len(results)} results for {len(requests)} {kind} requests")
        for r, res in zip(requests, results):
            if kind == "thought" and not isinstance(res, str):
                raise ValueError(f"expand_fn: a thought result must be a str, got {type(res).__name__}")
            if kind != "thought" and len(res) != len(r.options):
                raise ValueError(f"expand_fn: row {r.row} {kind}: {len(res)} probabilities "
                                 f"for {len(r.options)} options")
        self.calls[kind] += 1
        self.requests[kind] += len(requests)
        return results

    def stats(self) -> dict:
        # a row-at-a-time driver makes one call per request: `requests` is its call count
        return {"expand_calls": sum(self.calls.values()), "requests": sum(self.requests.values()),
                "calls_by_kind": {k: self.calls[k] for k in KINDS},
                "requests_by_kind": {k: self.requests[k] for k in KINDS}}


def _score(node: Node, probs: Sequence[float]) -> None:
    node.probs = [float(p) for p in probs]
    node.entropy = entropy(probs)
    node.score = information_score(node.entropy, initial_entropy(len(probs)))


def _best_child(s: SearchState) -> Node | None:
    """Rule 1: the untried child with the highest edge weight (ties: the order of s.weights, i.e. the
    principle file order, or the row's shuffled order with seam.shuffle_principles)."""
    left = {n: w for n, w in s.weights.items() if n not in s.tried}
    if not left:
        return None
    name = max(left, key=left.get)
    return Node(s.path[-1].chain + (name,), weight=left[name])


def apply_rules(s: SearchState, cfg: SeamConfig) -> None:
    """Rules 2 and 3 for the child just scored (s.pending) against the current node s.path[-1]."""
    child, current = s.pending, s.path[-1]
    s.expanded.append(child)
    s.pending = None
    if cfg.use_backtrace and child.score < current.score:  # Rule 2 condition
        if s.backtraces[child.depth] >= 1:  # Rule 3: second time at this level -> stop, child kept
            s.path.append(child)
            s.stop("rule3")
            return
        s.backtraces[child.depth] += 1  # back to current; its next-best child comes next step
        child.backtraced = True
        s.tried.add(child.chain[-1])
        return
    s.path.append(child)  # advance: new current node, its edge weights still to be asked
    s.weights, s.tried = None, set()


def search_step(states: list[SearchState], call: Callable, cfg: SeamConfig, ps: PrincipleSet) -> None:
    """One step for every active row: weights (rows at a new node) -> Rule 1 -> thoughts -> entropies
    -> Rules 2/3. Each phase is one batched call across the rows."""
    for s in states:  # stop before asking anything
        if s.path[-1].depth >= cfg.max_depth:
            s.stop("max_depth")
        elif len(s.path[-1].chain) == len(ps.names):
            s.stop("exhausted")
    need = [s for s in states if not s.stopped and s.weights is None]
    if need:  # every row's asks (all its principle orders) in one call
        groups = [weights_requests(s, ps, cfg) for s in need]
        results = iter(call([r for g in groups for r in g]))
        for s, g in zip(need, groups):
            s.weights = merged_edge_weights([(r.options, next(results)) for r in g])
    active = []
    for s in states:
        if s.stopped:
            continue
        s.pending = _best_child(s)
        if s.pending is None:  # every remaining principle tried at this node
            s.stop("exhausted")
        else:
            active.append(s)
    if not active:
        return
    for s, t in zip(active, call([thought_request(s, ps, cfg) for s in active])):
        s.pending.thought = clean_thought(t, cfg.thought_stop)
    for s, p in zip(active, call([entropy_request(s, cfg) for s in active])):
        _score(s.pending, p)
        apply_rules(s, cfg)


def _plain_thought(states: list[SearchState], call: Callable, cfg: SeamConfig) -> None:
    """Ablation no_fftree: one strong thought per row without principles, scored like a node."""
    for s in states:
        s.pending = Node(())
    reqs = [Request(s.row, "thought", (), fill(cfg.plain_thought_template, prompt=s.prompt,
                                               responses=_responses(s.options, cfg))) for s in states]
    for s, t in zip(states, call(reqs)):
        s.pending.thought = clean_thought(t, cfg.thought_stop)
    for s, p in zip(states, call([entropy_request(s, cfg) for s in states])):
        _score(s.pending, p)
        s.expanded.append(s.pending)
        s.path.append(s.pending)
        s.stop("no_fftree")


def decision_knowledge(s: SearchState, cfg: SeamConfig) -> tuple[int | None, str | None]:
    """(index of n_h in the path, the knowledge text the weak model gets)."""
    if not cfg.use_fftree:
        return len(s.path) - 1, s.path[-1].thought or None
    h = select_hidden_node([n.score for n in s.path])
    if h is None:
        return None, None
    if cfg.use_pat:
        return h, s.path[h].thought or None
    return h, fill(cfg.chain_template, principles=_chain_text(s.path[h].chain))


def _row_output(s: SearchState, h: int | None, knowledge: str | None, probs) -> dict:
    scores = [n.score for n in s.path]
    tree = [dict(n.to_dict(), gain=g) for n, g in zip(s.path, gains(scores))]
    p = [float(x) for x in probs]
    label = int(np.argmax(p))
    return {"tree": tree, "expanded": [n.to_dict() for n in s.expanded], "stop_reason": s.stop_reason,
            "hidden": h, "knowledge": knowledge, "tree_information": tree_information(scores),
            "weak_probs": p, "weak_label": label, "weak_conf": p[label]}


@dataclass
class SeamResult:
    rows: list[dict]  # per input row, JSON-serialisable (see _row_output)
    stats: dict  # expand_calls, requests (= a row-at-a-time loop's calls), per-kind counts
    states: list[SearchState]  # for inspection


def search(rows: Sequence[dict], expand_fn: Callable[[list[Request]], list], cfg: SeamConfig,
           principles: PrincipleSet | None = None) -> SeamResult:
    """SEAM annotation for a batch of rows ({"prompt": str, "options": [r_1, r_2, ...]}):
    FF-tree search (strong), then the weak decision, all rows advancing together.

    expand_fn(requests) -> results is called once per phase with every active row's request
    (one kind per call); see the module docstring for the contract."""
    ps = principles or load_principles(cfg.principles_path)
    states = []
    for i, r in enumerate(rows):
        options = tuple(r["options"])
        if len(options) < 2:
            raise ValueError(f"seam: row {i} has {len(options)} options; a preference row needs >= 2")
        root = Node((), entropy=initial_entropy(len(options)), score=0.0)  # no thought: H = H_init, i = 0
        states.append(SearchState(i, r["prompt"], options, [root]))
    call = _Caller(expand_fn)
    if not states:
        return SeamResult([], call.stats(), [])
    if cfg.use_fftree:
        while active := [s for s in states if not s.stopped]:
            search_step(active, call, cfg, ps)
    else:
        _plain_thought(states, call, cfg)
    picked = [decision_knowledge(s, cfg) for s in states]
    reqs = [Request(s.row, "decide", s.path[h].chain if h is not None else (), with_knowledge(s.prompt, k, cfg),
                    s.options, k if cfg.use_pat or not cfg.use_fftree else None)
            for s, (h, k) in zip(states, picked)]
    decided = call(reqs)
    out = [_row_output(s, h, k, p) for s, (h, k), p in zip(states, picked, decided)]
    return SeamResult(out, call.stats(), states)
