"""Weak-to-strong search (Zhou et al., NeurIPS 2024) as the `search` recipe: a frozen large model
decodes, steered by a small tuned / untuned pair, judged by the impartial ground-truth judge.

    w2s run configs/search.yaml          (embedded models, 2-core CPU)
    w2s run configs/tiny_search.yaml     (tiny random models: the tests)

Stages, on a preference task (K = 2, e.g. embedded:piqa with the goal alone as the prompt):
  data            held_out / test pairs
  weak_labels     the weak model labels which solution of each held_out pair is better
  strong_ceiling  the strong model trained on the held_out ground truth: the gold judge
                  (P(a preferred over b) from its option scores, both orders averaged)
  search_tuned    the tuned small model: DPO of the untuned one on the weakly labelled held_out
                  pairs (chosen = the solution the weak label prefers; TRL on Ray Train), or with
                  search.tune_on=weak_train on that split's ground-truth pairs; its reference is
                  the untuned model. Skipped when search.tuned.spec is given.
  search          one streaming stage over the test prompts: the frozen large model (strong.spec,
                  role policy) decodes every prompt three ways, with the same sampling settings
                    cbs     chunk-level beam search (W, K, L; pipelines/cbs.py)
                    bon     Best-of-N by the same tuned - untuned score, N = W*K by default
                    sample  plain sampling (W = K = 1, one chunk)
                  the two small models (role weak) score the hypotheses, and the gold judge
                  (role reward) compares the three answers of each prompt pairwise.

Report: each decoder's mean gold win probability against the other two (round robin) with a
bootstrap interval over prompts; win / tie / lose of CBS against Best-of-N and against sampling
(and of Best-of-N against sampling) with intervals; large-model tokens and small-model scoring
calls per prompt; answers side by side.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from actors.model_config import DerivedModelConfig
from pipelines.align import check_judged_answers, match_lines, match_summary
from pipelines.cbs import check_search, chunk_beam_search
from pipelines.joint_annotate import after, render
from pipelines.runner import Role, StreamStage, run_stage
from training.dpo_config import DPOConfig

DECODERS = ("cbs", "bon", "sample")
MATCHES = (("cbs", "bon"), ("cbs", "sample"), ("bon", "sample"))


@dataclass
class SearchConfig:
    """search.*: the search (W, K, L), the sampling of the large model, the small pair and its DPO."""
    width: int = 2  # W beams
    successors: int = 2  # K chunks per beam and step
    chunk_tokens: int = 10  # L large-model tokens per chunk (0: infinity)
    bon_n: int = 0  # N of Best-of-N (0: W*K, the samples CBS draws per step)
    max_new_tokens: int = 32
    temperature: float = 0.7  # the reference code's sampling of the large model
    top_k: int = 50
    prompt_format: str = "{prompt}\nAnswer:"
    stop: list[str] = field(default_factory=lambda: ["\n"])  # a response ends before these
    tuned: DerivedModelConfig = field(default_factory=DerivedModelConfig)  # "": search_tuned's DPO model
    untuned: DerivedModelConfig = field(default_factory=DerivedModelConfig)  # "": weak.models[0]
    dpo: DPOConfig = field(default_factory=lambda: DPOConfig(lr=5e-6, max_steps=20, max_length=192))
    # the tuned model's DPO pairs: "weak_labels" (held_out, chosen by the weak label: the small model
    # on its own labels) or "weak_train" (that split's ground truth: a small model aligned on human
    # labels, as Zhou et al.'s tuned small models are)
    tune_on: str = "weak_labels"
    tie_margin: float = 0.05  # |P(a preferred) - 0.5| <= tie_margin is a tie
    batch_rows: int = 4
    max_in_flight: int = 1
    seed: int = 0

    def __post_init__(self):
        check_search(self.width, self.successors, self.chunk_tokens, self.max_new_tokens)
        if self.bon_n < 0:
            raise ValueError(f"bon_n: must be >= 0 (0: width x successors), got {self.bon_n}")
        if self.temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k: must be >= 0 (0: no filter), got {self.top_k}")
        if self.tune_on not in ("weak_labels", "weak_train"):
            raise ValueError(f"tune_on: must be weak_labels or weak_train, got {self.tune_on!r}")
        check_judged_answers(self)

    @property
    def n(self) -> int:
        return self.bon_n or self.width * self.successors

    def decoders(self) -> dict[str, dict]:
        """Each decoder as CBS arguments: Best-of-N and sampling are CBS with one chunk."""
        return {"cbs": {"width": self.width, "successors": self.successors, "chunk_tokens": self.chunk_tokens},
                "bon": {"width": 1, "successors": self.n, "chunk_tokens": 0},
                "sample": {"width": 1, "successors": 1, "chunk_tokens": 0}}


def untuned_model(cfg):
    """search.untuned with its spec resolved ("": the first weak model, with its backend)."""
    s, weak = cfg.search, cfg.weak.models[0]
    return replace(s.untuned, spec=s.untuned.spec or weak.spec, name="untuned",
                   chat=s.untuned.chat if s.untuned.spec else weak.chat,
                   backend=replace(s.untuned.backend if s.untuned.spec else weak.backend, head="lm"))


def small_models(cfg) -> dict:
    """The tuned and untuned model configs, specs resolved (tuned "": search_tuned/model, read
    with the untuned model's chat flag and backend). Call it once search_tuned is complete."""
    s, untuned = cfg.search, untuned_model(cfg)
    tuned = replace(s.tuned, spec=s.tuned.spec or str(cfg.root / "search_tuned" / "model"), name="tuned",
                    chat=s.tuned.chat if s.tuned.spec else untuned.chat,
                    backend=replace(s.tuned.backend if s.tuned.spec else untuned.backend, head="lm"))
    return {"tuned": tuned, "untuned": untuned}


# ----------------------------------------------------------------------------- search_tuned


def weak_pairs(rows: list[dict], prompt_format: str) -> list[dict]:
    """TRL preference rows from weakly labelled K = 2 rows: chosen = the weak label's option."""
    out = []
    for r in rows:
        if len(r["options"]) != 2:
            raise ValueError(f"search: row {r['id']} has {len(r['options'])} options; weak-to-strong search "
                             "tunes the small model on pairs (K = 2)")
        w, prompt = int(r["weak_label"]), render(prompt_format, r["prompt"])
        out.append({"id": r["id"], "prompt": prompt, "chosen": after(prompt, r["options"][w].strip()),
                    "rejected": after(prompt, r["options"][1 - w].strip())})
    return out


def tuning_rows(cfg) -> list[dict]:
    """The rows the tuned model's pairs come from, each with the label DPO prefers as weak_label."""
    from pipelines.annotate import read_weak_labels
    from pipelines.data import read_split

    if cfg.search.tune_on == "weak_labels":
        return read_weak_labels(cfg.root / "weak_labels").to_pylist()
    if cfg.data.weak_train <= 0:
        raise ValueError("data.weak_train: search.tune_on=weak_train needs ground-truth rows (weak_train > 0)")
    rows = read_split(cfg.root / "data" / "weak_train")
    return [{**r, "weak_label": int(r["label"])} for r in rows]


def stage_tuned(cfg, log=print) -> dict:
    """DPO of the untuned small model on the weakly labelled held_out pairs (skipped when
    search.tuned.spec names a tuned model)."""
    import pyarrow.parquet as pq

    from pipelines.runner import StageConflict
    from training.dpo_trainer import DPOJob, run_dpo_stage

    if cfg.search.tuned.spec:
        log(f"search_tuned: given ({cfg.search.tuned.spec}), not trained")
        return {"model_dir": cfg.search.tuned.spec, "trained": False}
    out = cfg.root / "search_tuned"
    out.mkdir(parents=True, exist_ok=True)
    pairs = weak_pairs(tuning_rows(cfg), cfg.search.prompt_format)
    data = out / "pairs.parquet"
    table = pa.Table.from_pylist(pairs)
    if not data.is_file() or not pq.read_table(data).equals(table):
        pq.write_table(table, data)
    untuned = untuned_model(cfg)
    job = DPOJob(name="search_tuned", policy=untuned.spec, out_dir=str(out), config=cfg.search.dpo, data=str(data))
    summary = run_dpo_stage(job, log, conflict=StageConflict)
    return {**summary, "model_dir": str(out / "model"), "pairs": len(pairs), "trained": True,
            "tune_on": cfg.search.tune_on}


# ----------------------------------------------------------------------------- the search stage


def schema() -> pa.Schema:
    fields = [("id", pa.string()), ("prompt", pa.string())]
    for d in DECODERS:
        fields += [(f"{d}_response", pa.string()), (f"{d}_score", pa.float64()), (f"{d}_tokens", pa.int64()),
                   (f"{d}_generated", pa.int64()), (f"{d}_samples", pa.int64()), (f"{d}_steps", pa.int64()),
                   (f"{d}_scored", pa.int64()), (f"{d}_calls", pa.int64())]
    fields += [(f"p_{a}_over_{b}", pa.float64()) for a, b in MATCHES]
    fields += [("steer_margin", pa.float64()), ("untuned_margin", pa.float64()), ("judge_margin", pa.float64())]
    return pa.schema(fields)


def pair_margins(rows: list[dict], prompts: list[str], tuned_lp: list[float], untuned_lp: list[float]) -> list[tuple]:
    """Per K = 2 row, the margin right minus wrong option of s(x, y) = log pi_tuned - log pi_untuned
    (does the steer carry the task?) and of log pi_untuned alone (the small model's own
    preference); the log-probs are of each row's two options, in order. Other rows: NaN."""
    out = []
    for i, r in enumerate(rows):
        if len(r["options"]) != 2:
            out.append((float("nan"), float("nan")))
            continue
        y = int(r["label"])
        s = [tuned_lp[2 * i + j] - untuned_lp[2 * i + j] for j in (0, 1)]
        out.append((s[y] - s[1 - y], untuned_lp[2 * i + y] - untuned_lp[2 * i + 1 - y]))
    return out


def judge_margin(row: dict, p_first: float) -> float:
    """P(the right solution preferred) - 0.5 from the judge's P(option 0 over option 1), on a K = 2
    row (> 0: the judge is right); NaN on other rows."""
    if len(row["options"]) != 2:
        return float("nan")
    return float(p_first) - 0.5 if int(row["label"]) == 0 else 0.5 - float(p_first)


def search_batch(batch: pa.Table, *, actors: dict, search: dict, chat: dict) -> pa.Table:
    """Ray Data map function: every decoder on a batch of prompts (one batched large-model call
    and one batched scoring call per small model per search step), then the gold judge's
    pairwise preferences between the decoders' answers."""
    import ray

    large, (tuned, untuned), judge = actors["policy"][0], actors["weak"], actors["reward"][0]
    rows = batch.to_pylist()
    prompts = [render(search["prompt_format"], r["prompt"]) for r in rows]
    # a seed per batch (from its ids) and per call, so batches and steps draw different samples
    base = search["seed"] * 1_000_003 + zlib.crc32("\x1f".join(r["id"] for r in rows).encode())
    out = {r["id"]: {"id": r["id"], "prompt": p} for r, p in zip(rows, prompts)}
    for d, args in search["decoders"].items():
        stats = {"calls": 0}

        def sample_fn(ps, partials, n, max_tokens):
            seed = (base + 7919 * stats["calls"] + 104729 * DECODERS.index(d)) % 2**31
            stats["calls"] += 1
            return ray.get(large.sample_chunks.remote(ps, partials, n, max_tokens, search["temperature"],
                                                      search["top_k"], seed, chat["policy"], search["stop"]))

        def score_fn(ps, responses, finished):
            lt, lu = ray.get([tuned.response_logprobs.remote(ps, responses, finished, chat["tuned"]),
                              untuned.response_logprobs.remote(ps, responses, finished, chat["untuned"])])
            return [a - b for a, b in zip(lt, lu)]

        res = chunk_beam_search(prompts, sample_fn, score_fn, max_new_tokens=search["max_new_tokens"], **args)
        for r, x in zip(rows, res):
            out[r["id"]].update({f"{d}_response": x["response"].strip(), f"{d}_score": x["score"],
                                 f"{d}_tokens": x["tokens"], f"{d}_generated": x["generated"],
                                 f"{d}_samples": x["samples"], f"{d}_steps": x["steps"],
                                 f"{d}_scored": x["scored"], f"{d}_calls": stats["calls"]})
    # the test pairs' two solutions, scored whole (finished) as the DPO pairs were written
    two = [(p, after(p, (r["options"] + ["", ""])[j].strip())) for r, p in zip(rows, prompts) for j in (0, 1)]
    ps2, ys2 = [p for p, _ in two], [y for _, y in two]
    lt, lu = ray.get([tuned.response_logprobs.remote(ps2, ys2, [True] * len(two), chat["tuned"]),
                      untuned.response_logprobs.remote(ps2, ys2, [True] * len(two), chat["untuned"])])
    for r, (m_s, m_u) in zip(rows, pair_margins(rows, prompts, lt, lu)):
        out[r["id"]].update(steer_margin=m_s, untuned_margin=m_u)
    # the gold judge on the same pairs: how far its verdicts can be trusted
    # (the raw goal and solutions, as the judge renders and ranks the decoders' answers below)
    opts = [(r["options"] + ["", ""])[:2] for r in rows]
    p0 = ray.get(judge.compare.remote([r["prompt"] for r in rows], [o[0].strip() for o in opts],
                                      [o[1].strip() for o in opts]))
    for r, p in zip(rows, p0):
        out[r["id"]]["judge_margin"] = judge_margin(r, p)
    for a, b in MATCHES:
        ra = [out[r["id"]][f"{a}_response"] or "(empty)" for r in rows]
        rb = [out[r["id"]][f"{b}_response"] or "(empty)" for r in rows]
        p = ray.get(judge.compare.remote([r["prompt"] for r in rows], ra, rb))
        for r, x, y, q in zip(rows, ra, rb, p):
            out[r["id"]][f"p_{a}_over_{b}"] = 0.5 if x == y else float(q)  # the same answer: a tie
    return pa.Table.from_pylist([out[r["id"]] for r in rows], schema=schema())


def gold_win_rates(table: pa.Table) -> dict[str, np.ndarray]:
    """Per prompt, each decoder's mean judge win probability against the other two (round robin)."""
    p = {m: np.asarray(table[f"p_{m[0]}_over_{m[1]}"].to_pylist(), dtype=np.float64) for m in MATCHES}
    out = {}
    for d in DECODERS:
        parts = [p[m] if m[0] == d else 1 - p[m] for m in MATCHES if d in m]
        out[d] = np.mean(parts, axis=0)
    return out


def search_summary(table: pa.Table, margin: float, n_boot: int = 2000, seed: int = 0) -> dict:
    """Gold win probabilities, win / tie / lose per match, costs; 95% bootstrap intervals over
    prompts (one resample of prompts for every figure, so differences are paired)."""
    from pipelines.evaluate import interval

    n = table.num_rows
    gold = gold_win_rates(table)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    out = {"prompts": n, "gold": {}, "matches": {}, "cost": {}}
    for d, g in gold.items():
        out["gold"][d] = {"mean": float(g.mean()), "interval": interval(g[idx].mean(axis=1))}
    for a, b in MATCHES:
        # the same seed and size: match_summary draws the very resample used above
        out["matches"][f"{a}_vs_{b}"] = match_summary(table[f"p_{a}_over_{b}"].to_pylist(), margin, n_boot, seed)
    for d in DECODERS:
        gen, tok = np.asarray(table[f"{d}_generated"].to_pylist()), np.asarray(table[f"{d}_tokens"].to_pylist())
        out["cost"][d] = {"generated_per_prompt": float(gen.mean()), "answer_tokens": float(tok.mean()),
                          "scored_per_prompt": float(np.mean(table[f"{d}_scored"].to_pylist())),
                          "scored_per_generated_token": float(np.sum(table[f"{d}_scored"].to_pylist()) / max(gen.sum(), 1)),
                          "score": float(np.mean(table[f"{d}_score"].to_pylist()))}
    if "steer_margin" in table.column_names:
        for key in ("steer_margin", "untuned_margin", "judge_margin"):
            if key not in table.column_names:
                continue
            m = np.asarray(table[key].to_pylist(), dtype=np.float64)
            right = np.where(m > 0, 1.0, np.where(m == 0, 0.5, 0.0))  # NaN (not a pair) -> 0; dropped below
            ok = ~np.isnan(m)
            boot = np.where(ok[idx], right[idx], np.nan)
            out[key.replace("margin", "accuracy")] = {
                "mean": float(right[ok].mean()) if ok.any() else None, "n": int(ok.sum()),
                "interval": interval(np.nanmean(boot, axis=1)) if ok.any() else None}
    return out


def stage_search(cfg, log=print) -> dict:
    """CBS, Best-of-N and sampling on the test prompts, judged by strong_ceiling (one stage)."""
    from actors.reward import RewardActor
    from actors.reward_model import save_reward_meta
    from actors.strong import StrongActor
    from actors.weak import WeakActor

    s, root = cfg.search, cfg.root
    small = small_models(cfg)
    judge_dir = str(root / "strong_ceiling" / "model")
    save_reward_meta(judge_dir, "judge", template=asdict(cfg.template), max_length=cfg.strong.train.max_length)
    large_backend = replace(cfg.strong.backend, head="lm")
    args = {"prompt_format": s.prompt_format, "decoders": s.decoders(), "max_new_tokens": s.max_new_tokens,
            "temperature": s.temperature, "top_k": s.top_k, "stop": list(s.stop), "seed": s.seed}
    chat = {"policy": cfg.strong.chat, "tuned": small["tuned"].chat, "untuned": small["untuned"].chat}

    def finalize(table: pa.Table, run: dict) -> dict:
        summary = search_summary(table, s.tie_margin)
        (root / "search" / "answers.json").write_text(json.dumps(table.to_pylist(), indent=1, default=str))
        summary["examples"] = [{k: r[k] for k in ("prompt", "cbs_response", "bon_response", "sample_response")}
                               for r in table.slice(0, 6).to_pylist()]
        summary["large_tokens"], summary["small_calls"] = run.get("large_tokens"), run.get("small_tokens")
        g = summary["gold"]
        return {**summary, "line": "gold win probability " + ", ".join(f"{d} {g[d]['mean']:.3f}" for d in DECODERS)}

    # the tuned model's own fingerprint: a retrained search_tuned (same path, other pairs or
    # settings) must not leave an old search standing
    tuned_from = None if s.tuned.spec else json.loads((root / "search_tuned" / "_SUCCESS.json").read_text())["fingerprint"]
    summary = run_stage(StreamStage(
        kind="search", split_dir=root / "data" / "test", out_dir=root / "search", label="search",
        config={"search": args, "chat": chat, "large": cfg.strong.spec, "large_backend": asdict(large_backend),
                "tuned_from": tuned_from,
                "small": {k: {"spec": m.spec, "backend": asdict(m.backend)} for k, m in small.items()},
                "judge": judge_dir, "judge_backend": asdict(cfg.strong.backend), "tie_margin": s.tie_margin},
        what="search", describe=f"CBS W={s.width} K={s.successors} L={s.chunk_tokens or 'inf'}, Best-of-{s.n}, "
                                f"sampling: {cfg.strong.spec} steered by {small['tuned'].spec} - {small['untuned'].spec}",
        roles=[Role("policy", StrongActor, [{"name": "large", "spec": cfg.strong.spec, "backend": large_backend}],
                    ["large"]),
               Role("weak", WeakActor, [{"name": k, "spec": m.spec, "backend": m.backend} for k, m in small.items()],
                    list(small)),
               Role("reward", RewardActor, [{"name": "judge", "model_dir": judge_dir,
                                             "backend": replace(cfg.strong.backend, head="lm")}], ["judge"])],
        batch_fn=search_batch, batch_rows=s.batch_rows, max_in_flight=s.max_in_flight, schema=schema(),
        batch_kwargs={"search": args, "chat": chat}, finalize=finalize,
        counters={"large_tokens": ("policy", "tokens_seen"), "small_tokens": ("weak", "tokens_seen")}),
        cfg.cluster, log)
    g, m = summary["gold"], summary["matches"]
    log("search: " + "; ".join(f"{k.replace('_', ' ')}: win {v['win']} / tie {v['tie']} / lose {v['lose']}"
                               for k, v in m.items()))
    return {k: summary[k] for k in ("prompts", "gold", "matches", "cost", "examples", "rows_per_s", "seconds",
                                    "steer_accuracy", "untuned_accuracy", "judge_accuracy")
            if k in summary} | {"config": args, "models": {"large": cfg.strong.spec,
                                                           **{k: v.spec for k, v in small.items()}},
                                "tuned_on": "given" if s.tuned.spec else s.tune_on}


TUNED_ON = {"weak_labels": "tuned by DPO on the weak model's labels of the held_out pairs",
            "weak_train": "tuned by DPO on the ground-truth weak_train pairs"}


def report_lines(result: dict) -> list[str]:
    """The report's weak-to-strong search section."""
    c, g, m = result["config"], result["gold"], result["matches"]
    d = c["decoders"]
    lines = ["## Weak-to-strong search (chunk-level beam search)", "",
             f"The frozen large model {result['models']['large']} decodes {result['prompts']} test prompts, steered by "
             f"log pi_tuned - log pi_untuned ({result['models']['tuned']} vs {result['models']['untuned']}; "
             f"{TUNED_ON.get(result.get('tuned_on', 'weak_labels'), 'the tuned model as given')}); "
             f"CBS W={d['cbs']['width']} K={d['cbs']['successors']} L={d['cbs']['chunk_tokens'] or 'inf'}, Best-of-"
             f"{d['bon']['successors']} by the same score, plain sampling (temperature {c['temperature']}, top-k "
             f"{c['top_k']}, at most {c['max_new_tokens']} tokens). The gold judge is the strong model trained on "
             "ground truth (strong_ceiling); 95% bootstrap intervals over prompts.", "",
             "| decoder | gold win prob. vs the other two [95% CI] | large-model tokens / prompt | "
             "hypotheses scored / prompt | small-model scores / generated token | mean s(x, y) |",
             "|---|---|---|---|---|---|"]
    for k in DECODERS:
        lo, hi = g[k]["interval"]
        cost = result["cost"][k]
        lines.append(f"| {k} | {g[k]['mean']:.3f} [{lo:.3f}, {hi:.3f}] | {cost['generated_per_prompt']:.1f} | "
                     f"{cost['scored_per_prompt']:.1f} | {cost['scored_per_generated_token']:.3f} | {cost['score']:.3f} |")
    lines += [""] + match_lines({k.replace("_", " "): v for k, v in m.items()})
    if result.get("steer_accuracy"):
        st, un = result["steer_accuracy"], result["untuned_accuracy"]
        ci = lambda a: f"[{a['interval'][0]:.3f}, {a['interval'][1]:.3f}]"  # noqa: E731
        lines += ["", f"Does the steer carry the task? On the {st['n']} test pairs' ground truth, s(x, y) = "
                  f"log pi_tuned - log pi_untuned scores the right solution above the wrong one on "
                  f"{st['mean']:.3f} {ci(st)} of them; the untuned model's own log-likelihood does on "
                  f"{un['mean']:.3f} {ci(un)} (chance 0.5). A steer near chance cannot lift the large model."]
    if result.get("judge_accuracy"):
        ja = result["judge_accuracy"]
        lines += ["", f"Is the judge right? On the same {ja['n']} pairs the gold judge prefers the right solution on "
                  f"{ja['mean']:.3f} [{ja['interval'][0]:.3f}, {ja['interval'][1]:.3f}] of them (chance 0.5): the win "
                  "rates above are only as good as this."]
    lines += ["", "Answers side by side:", "", "| prompt | cbs | bon | sample |", "|---|---|---|---|"]
    cell = lambda t: (t or "").replace("|", "/").replace("\n", " ")[:120]  # noqa: E731
    for e in result.get("examples", []):
        lines.append(f"| {cell(e['prompt'])} | {cell(e['cbs_response'])} | {cell(e['bon_response'])} | "
                     f"{cell(e['sample_response'])} |")
    return lines + [""]


def plot(result: dict, path: Path) -> None:
    """Gold win probability per decoder (with intervals) and win / tie / lose per match."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    g = result["gold"]
    means = [g[d]["mean"] for d in DECODERS]
    err = np.array([[m - g[d]["interval"][0], g[d]["interval"][1] - m] for d, m in zip(DECODERS, means)]).T
    a.bar(DECODERS, means, yerr=err, capsize=4, color=["tab:green", "tab:blue", "tab:gray"])
    a.axhline(0.5, color="k", lw=0.8, ls="--")
    a.set_ylabel("gold judge: mean win probability")
    a.set_title("vs the other two decoders (95% CI)")
    names = list(result["matches"])
    m = result["matches"]
    left = np.zeros(len(names))
    for key, color in (("win", "tab:green"), ("tie", "tab:gray"), ("lose", "tab:red")):
        vals = np.array([m[k][key] / m[k]["n"] for k in names])
        b.barh([k.replace("_", " ") for k in names], vals, left=left, color=color, label=key)
        left += vals
    b.set_xlim(0, 1)
    b.legend(loc="lower right", fontsize=8)
    b.set_title("gold judge: win / tie / lose")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(root: Path, metrics: dict) -> Path:
    """report.md of a search run: the search section, its plot and the stage times."""
    from pipelines.evaluate import stage_lines

    result = metrics["search"]
    plot(result, root / "search.png")
    lines = [f"# w2s search report: {root}", "", f"Task: {metrics['data']['source']}, test prompts: "
             f"{result['prompts']}.", ""] + report_lines(result) + ["![search](search.png)", ""]
    lines += stage_lines(metrics)
    path = Path(root) / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
