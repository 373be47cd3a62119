"""MACPO's contrastive pairs (Lyu et al., ICLR 2025; seed 002 slides "MACPO"): weak teachers and a
strong student, each a learner with a positive and a negative agent, improve each other over
iterations of DPO.

Per iteration and per learner (every teacher and the student), for each prompt x:
  chosen    a positive answer from the OTHER learners' positive agents, the one with the lowest
            perplexity under the learner itself: PPL(y | x) = exp(-(1/|y|) sum_t log p(y_t | x, y_<t)),
            i.e. the largest mean token log-likelihood (the answer it finds most familiar);
  rejected  the answer of the learner's OWN negative agent;
then DPO of the learner's positive agent on those pairs (the reference scripts: beta 0.1 with an
SFT term of weight 0.2, lr 1e-5, one epoch per iteration).

Pure logic: `contrastive_pairs` takes the learner's scoring as a callable, so a stage can pass an
actor call (`sequence_logprobs`) and tests scripted scores.

The `macpo` recipe (w2s run configs/macpo.yaml; tiny: configs/tiny_macpo.yaml), on a preference
task (K = 2, e.g. embedded:piqa: a goal, a good and a bad solution):
  data            weak_train (split into one shard per teacher), held_out (the prompts the agents
                  answer each iteration), test
  strong_ceiling  the strong model trained on held_out ground truth: the impartial gold judge
  macpo_init      teacher t (weak.models, >= 2): positive agent = SFT on the good solutions of its
                  shard, negative agent = SFT on the bad ones; their answers to the held_out prompts;
                  student (strong.spec): positive agent = SFT on the teachers' positive answers (this
                  is also the "naive SFT" baseline), negative agent = that model further trained on
                  the teachers' negative answers; the confidence-loss baseline = the student trained
                  on the teachers' positive answers with Burns et al.'s loss per token
  macpo_iter      iterations 1..macpo.iterations: every agent (one actor each) answers the held_out
                  prompts; each learner's pairs (`contrastive_pairs`, scored by its own positive
                  actor); DPO + SFT term of each learner's positive agent on its pairs (TRL on Ray
                  Train); negative agents stay as initialised
  macpo_eval      greedy test answers of naive SFT, the confidence-loss baseline and the student after
                  each iteration; the judge's win / tie / lose of each iteration against both
                  baselines, with bootstrap intervals
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.align import check_judged_answers, length_bias, match_lines, match_summary
from pipelines.joint_annotate import after, render
from pipelines.runner import Role, StreamStage, read_complete, run_stage
from training.dpo_config import DPOConfig
from training.sft_config import TrainConfig

# logprob_fn(prompts, continuations) -> per row (sum of token log-probs, number of tokens)
LogprobFn = Callable[[list[str], list[str]], list[tuple[float, int]]]


def perplexity(logp_sum: float, n_tokens: int) -> float:
    """exp(-(1/|y|) sum_t log p(y_t | x, y_<t)); an answer of no token has no perplexity (inf)."""
    return math.exp(-logp_sum / n_tokens) if n_tokens > 0 else math.inf


def contrastive_pairs(learner: str, prompts: list[str], positives: dict[str, list[str]],
                      own_negative: list[str], logprob_fn: LogprobFn) -> list[dict]:
    """MACPO's pairs for `learner`: per prompt, chosen = the other learners' positive answer of
    lowest perplexity under the learner (one batched logprob_fn call for all candidates; ties: the
    first agent in `positives` order), rejected = the learner's own negative agent's answer.

    positives: agent name -> one positive answer per prompt (the learner's own entry, if present,
    is left out); own_negative: the learner's negative agent's answer per prompt. Rows whose chosen
    and rejected answers are equal, or with no candidate, give no pair. Each pair: prompt, chosen,
    rejected, chosen_from (the agent), chosen_ppl."""
    others = [a for a in positives if a != learner]
    if not others:
        raise ValueError(f"contrastive_pairs: no positive agent besides {learner!r}")
    if len(own_negative) != len(prompts) or any(len(positives[a]) != len(prompts) for a in others):
        raise ValueError("contrastive_pairs: every agent needs one answer per prompt")
    cand = [(i, a) for i in range(len(prompts)) for a in others if positives[a][i].strip()]
    scored = logprob_fn([prompts[i] for i, _ in cand], [positives[a][i] for i, a in cand]) if cand else []
    if len(scored) != len(cand):
        raise ValueError(f"contrastive_pairs: logprob_fn returned {len(scored)} rows for {len(cand)} candidates")
    best: dict[int, tuple[float, str]] = {}
    for (i, a), (lp, n) in zip(cand, scored):
        ppl = perplexity(float(lp), int(n))
        if i not in best or ppl < best[i][0]:
            best[i] = (ppl, a)
    pairs = []
    for i, prompt in enumerate(prompts):
        if i not in best:
            continue
        ppl, agent = best[i]
        chosen, rejected = positives[agent][i], own_negative[i]
        if chosen.strip() == rejected.strip() or not rejected.strip():
            continue
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "chosen_from": agent,
                      "chosen_ppl": ppl})
    return pairs


# ----------------------------------------------------------------------------- the recipe's stages


@dataclass
class MacpoConfig:
    """macpo.*: iterations, how the agents answer, their SFT initialisation and their DPO."""
    iterations: int = 3  # the paper's 3
    prompt_format: str = "{prompt}\nAnswer:"
    max_new_tokens: int = 32
    stop: list[str] = field(default_factory=lambda: ["\n"])
    # the agents' SFT initialisation (target texts); gamma_max is the confidence-loss baseline's weight
    sft: TrainConfig = field(default_factory=lambda: TrainConfig(engine="torch", lr=1e-5, max_steps=20,
                                                                 checkpoint_at_end=False, gamma_max=0.2))
    # the reference scripts: beta 0.1, an SFT term of weight 0.2, lr 1e-5, one epoch per iteration
    dpo: DPOConfig = field(default_factory=lambda: DPOConfig(lr=1e-5, beta=0.1, sft_weight=0.2, epochs=1,
                                                            max_length=192))
    # the agents' answers in the iterations: 0 greedy; > 0 sampled (seeded by the iteration). Greedy
    # answers of a positive and a negative agent are often equal, and such a prompt gives no pair.
    temperature: float = 0.0
    tie_margin: float = 0.05
    batch_rows: int = 8
    max_in_flight: int = 1

    def __post_init__(self):
        if self.iterations < 1:
            raise ValueError(f"iterations: must be >= 1, got {self.iterations}")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens: must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0 (0: greedy), got {self.temperature}")
        check_judged_answers(self)


def sequence_aux_conf_loss(logits, batch: dict, ctx):
    """Burns et al.'s auxiliary confidence loss per target token (seed 003 Eq. 1 applied to each
    token of a target text): L = (1 - gamma) CE(y_t) + gamma CE(y^_t), y_t the weak answer's token,
    y^_t = argmax of the model's own (detached) distribution at t; gamma = ctx.gamma (warmed up to
    train.gamma_max). MACPO's "confidence loss" baseline."""
    from training import losses as L

    logp = logits.log_softmax(-1)
    targets = batch["input_ids"][:, -logits.shape[1]:]
    mask = batch["cont_mask"]
    g = ctx.gamma
    own = logp.detach().argmax(-1)
    loss = (1 - g) * L.sequence_cross_entropy(logp, targets, mask) + g * L.sequence_cross_entropy(logp, own, mask)
    return loss, {"gamma": g}


def learners(cfg) -> list[str]:
    return [m.name for m in cfg.weak.models] + ["student"]


def _examples(rows: list[dict], answers: dict[str, list[str]] | None, fmt: str, pick: str) -> list[dict]:
    """Target-text examples: the rows' good / bad solution (answers None) or every given answer."""
    out = []
    for i, r in enumerate(rows):
        if answers is None:
            texts = [r["options"][r["label"] if pick == "good" else 1 - r["label"]]]
        else:
            texts = [a[i] for a in answers.values()]
        for j, t in enumerate(texts):
            if t and t.strip():
                text = render(fmt, r["prompt"])
                out.append({"id": f"{r['id']}#{j}", "text": text, "response": after(text, t.strip()),
                            "target": 0, "weight": 1.0})
    if not out:
        raise ValueError("macpo: no training examples (every answer is empty)")
    return out


def _sft(cfg, name: str, spec: str, examples: list[dict], log, loss=None) -> str:
    from pipelines.train_stages import run_job
    from training.sft_trainer import TrainJob

    out = cfg.root / "macpo" / "init" / name
    job = TrainJob(name=f"macpo_{name}", spec=spec, out_dir=str(out), train=cfg.macpo.sft, examples=examples,
                   method="aux_conf_tokens" if loss else "sft", answer="sequence", loss=loss)
    run_job(job, log)
    return str(out / "model")


ANSWER_SCHEMA = pa.schema([("id", pa.string()), ("prompt", pa.string()), ("answers", pa.string()),
                           ("pairs", pa.string())])


def answer_batch(batch: pa.Table, *, actors: dict, names: dict, fmt: str, max_new_tokens: int, stop: list,
                 pairs_for: list, temperature: float = 0.0, seed: int = 0) -> pa.Table:
    """Every agent's answer to the batch's prompts (one generate call per agent; greedy at
    temperature 0), then each learner of `pairs_for` its contrastive pairs, scored by its own
    positive actor."""
    import ray

    from pipelines.dpo_pairs import clean

    rows = batch.to_pylist()
    prompts = [render(fmt, r["prompt"]) for r in rows]
    refs = {name: a.generate.remote(prompts, 1, max_new_tokens, temperature, seed, False, stop=stop)
            for role in ("policy", "weak") for name, a in zip(names[role], actors.get(role, []))}
    answers = {name: [clean(o[0][0], True) for o in ray.get(ref)] for name, ref in refs.items()}
    pos_actor = dict(zip(names["policy"], actors["policy"]))
    spaced = {n: [after(p, a) if a else "" for p, a in zip(prompts, v)]  # as the agents were trained
              for n, v in answers.items()}
    pairs: dict[str, dict] = {}
    for learner in pairs_for:
        positives = {n.removesuffix("_pos"): spaced[n] for n in names["policy"]}
        made = contrastive_pairs(learner, prompts, positives, spaced[f"{learner}_neg"],
                                 lambda p, c, a=pos_actor[f"{learner}_pos"]: ray.get(a.sequence_logprobs.remote(p, c)))
        pairs[learner] = {p["prompt"]: p for p in made}
    return pa.Table.from_pylist([{
        "id": r["id"], "prompt": p, "answers": json.dumps({n: a[i] for n, a in answers.items()}),
        "pairs": json.dumps({ln: pairs[ln].get(p) for ln in pairs})} for i, (r, p) in enumerate(zip(rows, prompts))],
        schema=ANSWER_SCHEMA)


def answers_stage(cfg, split: str, out_dir: Path, agents: dict[str, str], negatives: dict[str, str], log,
                  pairs_for: list[str] = (), temperature: float = 0.0, seed: int = 0) -> list[dict]:
    """One streaming stage: the agents (positives as role policy, negatives as role weak) answer a
    split's prompts (greedy, or sampled at `temperature` with `seed`); with pairs_for, each such
    learner's contrastive pairs too. Rows sorted by id."""
    from actors.strong import StrongActor
    from actors.weak import WeakActor

    m = cfg.macpo
    backend = cfg.strong.backend
    names = {"policy": list(agents), "weak": list(negatives)}
    roles = [Role("policy", StrongActor, [{"name": n, "spec": s, "backend": backend} for n, s in agents.items()],
                  list(agents))]
    if negatives:
        roles.append(Role("weak", WeakActor, [{"name": n, "spec": s, "backend": backend} for n, s in negatives.items()],
                          list(negatives)))
    kwargs = {"names": names, "fmt": m.prompt_format, "max_new_tokens": m.max_new_tokens, "stop": list(m.stop),
              "pairs_for": list(pairs_for)}
    if temperature > 0:  # greedy stages keep the config (and fingerprint) they had
        kwargs.update(temperature=temperature, seed=seed)
    run_stage(StreamStage(
        kind="macpo/answers", split_dir=cfg.root / "data" / split, out_dir=Path(out_dir), label=f"macpo {Path(out_dir).parent.name}/{Path(out_dir).name}",
        config={"agents": agents, "negatives": negatives, "backend": asdict(backend), **kwargs},
        what="macpo agents", describe=f"{len(agents) + len(negatives)} agents answer the {split} prompts",
        roles=roles, batch_fn=answer_batch, batch_rows=m.batch_rows, max_in_flight=m.max_in_flight,
        batch_kwargs=kwargs, schema=ANSWER_SCHEMA, finalize=lambda t, run: {"line": f"{t.num_rows} prompts"}),
        cfg.cluster, log)
    return read_complete(Path(out_dir) / "_shards", cfg.root / "data" / split, ANSWER_SCHEMA).to_pylist()


def stage_init(cfg, log=print) -> dict:
    """The agents' SFT initialisation and the two baselines (see the module docstring)."""
    from pipelines.data import read_split

    m, root = cfg.macpo, cfg.root
    teachers = cfg.weak.models
    shard_rows = read_split(root / "data" / "weak_train")
    held = read_split(root / "data" / "held_out")
    models: dict[str, str] = {}
    for i, t in enumerate(teachers):
        own = shard_rows[i::len(teachers)]
        for kind in ("good", "bad"):
            models[f"{t.name}_{'pos' if kind == 'good' else 'neg'}"] = _sft(
                cfg, f"{t.name}_{'pos' if kind == 'good' else 'neg'}", t.spec, _examples(own, None, m.prompt_format, kind), log)
    rows = answers_stage(cfg, "held_out", root / "macpo" / "init" / "teacher_answers",
                         {f"{t.name}_pos": models[f"{t.name}_pos"] for t in teachers},
                         {f"{t.name}_neg": models[f"{t.name}_neg"] for t in teachers}, log)
    by_id = {r["id"]: json.loads(r["answers"]) for r in rows}
    good = {t.name: [by_id[r["id"]][f"{t.name}_pos"] for r in held] for t in teachers}
    bad = {t.name: [by_id[r["id"]][f"{t.name}_neg"] for r in held] for t in teachers}
    weak_answers = _examples(held, good, m.prompt_format, "")
    models["student_pos"] = _sft(cfg, "student_pos", cfg.strong.spec, weak_answers, log)
    models["student_neg"] = _sft(cfg, "student_neg", models["student_pos"], _examples(held, bad, m.prompt_format, ""), log)
    models["conf_loss"] = _sft(cfg, "conf_loss", cfg.strong.spec, weak_answers, log, loss=sequence_aux_conf_loss)
    (root / "macpo" / "init" / "models.json").write_text(json.dumps(models, indent=1))
    return {"models": models, "weak_answer_examples": len(weak_answers)}


def positive_models(cfg, k: int) -> dict[str, str]:
    """Each learner's positive agent after iteration k (0: the SFT initialisation)."""
    if k == 0:
        init = json.loads((cfg.root / "macpo" / "init" / "models.json").read_text())
        return {f"{ln}_pos": init[f"{ln}_pos"] for ln in learners(cfg)}
    return json.loads((cfg.root / "macpo" / f"iter_{k}" / "models.json").read_text())


def stage_iterations(cfg, log=print) -> dict:
    """macpo.iterations rounds of answers -> contrastive pairs -> DPO of every positive agent."""
    import pyarrow.parquet as pq

    from pipelines.runner import StageConflict
    from training.dpo_trainer import DPOJob, run_dpo_stage

    root = cfg.root
    init = json.loads((root / "macpo" / "init" / "models.json").read_text())
    negatives = {f"{ln}_neg": init[f"{ln}_neg"] for ln in learners(cfg)}
    out: dict = {}
    for k in range(1, cfg.macpo.iterations + 1):
        step = root / "macpo" / f"iter_{k}"
        prev = positive_models(cfg, k - 1)
        rows = answers_stage(cfg, "held_out", step / "answers", prev, negatives, log, pairs_for=learners(cfg),
                             temperature=cfg.macpo.temperature, seed=1000 * cfg.data.seed + k)
        out[k], now = {}, dict(prev)
        for ln in learners(cfg):
            pairs = [p for r in rows if (p := json.loads(r["pairs"]).get(ln))]
            (step / ln).mkdir(parents=True, exist_ok=True)
            data = step / ln / "pairs.parquet"
            if not pairs:  # every chosen answer equalled the rejected one: nothing to learn this round
                log(f"macpo: iteration {k}: no pair for {ln}; its positive agent stays as it was")
                out[k][ln] = {"pairs": 0, "chosen_from": {}, "final_loss": None}
                continue
            pq.write_table(pa.Table.from_pylist([{k2: p[k2] for k2 in ("prompt", "chosen", "rejected", "chosen_from")}
                                                 for p in pairs]), data)
            job = DPOJob(name=f"macpo_iter{k}_{ln}", policy=prev[f"{ln}_pos"], out_dir=str(step / ln),
                         config=cfg.macpo.dpo, data=str(data))
            summary = run_dpo_stage(job, log, conflict=StageConflict)
            sources = {}
            for p in pairs:
                sources[p["chosen_from"]] = sources.get(p["chosen_from"], 0) + 1
            out[k][ln] = {"pairs": len(pairs), "chosen_from": sources, "final_loss": summary.get("final_loss")}
            now[f"{ln}_pos"] = str(step / ln / "model")
        (step / "models.json").write_text(json.dumps(now, indent=1))
        log(f"macpo: iteration {k}: pairs " + ", ".join(f"{ln} {v['pairs']}" for ln, v in out[k].items()))
    return {"iterations": out}


JUDGE_SCHEMA_FIELDS = [("id", pa.string()), ("prompt", pa.string()), ("answers", pa.string()), ("p", pa.string())]


def judge_batch(batch: pa.Table, *, actors: dict, names: list, fmt: str, max_new_tokens: int, stop: list,
                matches: list) -> pa.Table:
    """Greedy test answers of every compared model, then the judge's P(a preferred over b) per match."""
    import ray

    from pipelines.dpo_pairs import clean

    rows = batch.to_pylist()
    prompts = [render(fmt, r["prompt"]) for r in rows]
    refs = {n: a.generate.remote(prompts, 1, max_new_tokens, 0.0, 0, False, stop=stop)
            for n, a in zip(names, actors["policy"])}
    answers = {n: [clean(o[0][0], True) or "(empty)" for o in ray.get(ref)] for n, ref in refs.items()}
    judge = actors["reward"][0]
    p = {}
    for a, b in matches:
        got = ray.get(judge.compare.remote([r["prompt"] for r in rows], answers[a], answers[b]))
        p[f"{a} vs {b}"] = [0.5 if x == y else float(q) for x, y, q in zip(answers[a], answers[b], got)]
    return pa.Table.from_pylist([{"id": r["id"], "prompt": pr, "answers": json.dumps({n: v[i] for n, v in answers.items()}),
                                  "p": json.dumps({m: v[i] for m, v in p.items()})}
                                 for i, (r, pr) in enumerate(zip(rows, prompts))], schema=pa.schema(JUDGE_SCHEMA_FIELDS))


def stage_eval(cfg, log=print) -> dict:
    """The student after each iteration against naive SFT and the confidence-loss baseline, judged
    by strong_ceiling (one stage: the compared models and the judge side by side)."""
    from actors.reward import RewardActor
    from actors.reward_model import save_reward_meta
    from actors.strong import StrongActor

    m, root = cfg.macpo, cfg.root
    init = json.loads((root / "macpo" / "init" / "models.json").read_text())
    models = {"naive_sft": init["student_pos"], "conf_loss": init["conf_loss"]}
    models.update({f"macpo_iter{k}": positive_models(cfg, k)["student_pos"] for k in range(1, m.iterations + 1)})
    matches = [(f"macpo_iter{k}", base) for k in range(1, m.iterations + 1) for base in ("naive_sft", "conf_loss")]
    judge_dir = str(root / "strong_ceiling" / "model")
    save_reward_meta(judge_dir, "judge", template=asdict(cfg.template), max_length=cfg.strong.train.max_length)
    kwargs = {"names": list(models), "fmt": m.prompt_format, "max_new_tokens": m.max_new_tokens, "stop": list(m.stop),
              "matches": matches}

    def finalize(table: pa.Table, run: dict) -> dict:
        rows = table.to_pylist()
        ps = {k: [json.loads(r["p"])[k] for r in rows] for k in (f"{a} vs {b}" for a, b in matches)}
        ans = [json.loads(r["answers"]) for r in rows]
        length = {f"{a} vs {b}": length_bias([x[a] for x in ans], [x[b] for x in ans], ps[f"{a} vs {b}"], m.tie_margin)
                  for a, b in matches}
        return {"matches": {k: match_summary(v, m.tie_margin) for k, v in ps.items()}, "length": length,
                "examples": [{"prompt": r["prompt"], **a} for r, a in zip(rows[:6], ans)]}

    summary = run_stage(StreamStage(
        kind="macpo/eval", split_dir=root / "data" / "test", out_dir=root / "macpo" / "eval", label="macpo eval",
        config={"models": models, "judge": judge_dir, "backend": asdict(cfg.strong.backend),
                "tie_margin": m.tie_margin, **kwargs},
        what="macpo eval", describe=f"{len(models)} students answer the test prompts, the judge compares them",
        roles=[Role("policy", StrongActor, [{"name": n, "spec": s, "backend": cfg.strong.backend}
                                            for n, s in models.items()], list(models)),
               Role("reward", RewardActor, [{"name": "judge", "model_dir": judge_dir, "backend": cfg.strong.backend}],
                    ["judge"])],
        batch_fn=judge_batch, batch_rows=m.batch_rows, max_in_flight=m.max_in_flight, batch_kwargs=kwargs,
        schema=pa.schema(JUDGE_SCHEMA_FIELDS), finalize=finalize), cfg.cluster, log)
    for k, v in summary["matches"].items():
        log(f"macpo_eval: {k}: win {v['win']} / tie {v['tie']} / lose {v['lose']}")
    return {"prompts": summary["rows"], "matches": summary["matches"], "examples": summary["examples"],
            "length": summary.get("length"),
            "models": models, "iterations": m.iterations}


def report_lines(result: dict) -> list[str]:
    lines = ["## MACPO (multi-agent contrastive preference optimisation)", "",
             f"The student after each of {result['iterations']} MACPO iterations against naive SFT on the weak "
             "teachers' answers and against the confidence-loss baseline, on "
             f"{result['prompts']} test prompts; the judge is the strong model trained on ground truth "
             "(strong_ceiling); 95% bootstrap intervals over prompts.", "",
             ] + match_lines(result["matches"])
    if result.get("length"):  # a judge that prefers longer answers confounds the verdicts with length
        lines += ["", "Length and the judge: each side's mean answer length, and over the decided matches with "
                  "answers of different length, how often the judge prefers the longer one (0.5: no lean).", "",
                  "| match | mean characters (a / b) | decided rows | judge prefers the longer answer |",
                  "|---|---|---|---|"]
        for k, v in result["length"].items():
            share = "n/a" if v["longer_preferred"] is None else f"{v['longer_preferred']:.2f}"
            lines.append(f"| {k} | {v['mean_chars_a']:.0f} / {v['mean_chars_b']:.0f} | {v['rows']} | {share} |")
    cell = lambda t: (t or "").replace("|", "/").replace("\n", " ")[:100]  # noqa: E731
    names = list(result["models"])
    lines += ["", "Answers side by side:", "", "| prompt | " + " | ".join(names) + " |",
              "|" + "---|" * (len(names) + 1)]
    for e in result.get("examples", []):
        lines.append(f"| {cell(e['prompt'])} | " + " | ".join(cell(e.get(n)) for n in names) + " |")
    return lines + [""]


def write_report(root: Path, metrics: dict) -> Path:
    """report.md of a MACPO run, with a win / tie / lose plot per match."""
    import matplotlib

    from pipelines.evaluate import stage_lines

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = metrics["macpo"]
    m = result["matches"]
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.45 * len(m)))
    left = np.zeros(len(m))
    for key, color in (("win", "tab:green"), ("tie", "tab:gray"), ("lose", "tab:red")):
        vals = np.array([v[key] / v["n"] for v in m.values()])
        ax.barh(list(m), vals, left=left, color=color, label=key)
        left += vals
    ax.set_xlim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("MACPO: the judge's win / tie / lose")
    fig.tight_layout()
    fig.savefig(Path(root) / "macpo.png", dpi=120)
    plt.close(fig)
    lines = [f"# w2s MACPO report: {root}", "", f"Task: {metrics['data']['source']}.", ""] + report_lines(result)
    lines += ["![macpo](macpo.png)", ""] + stage_lines(metrics)
    path = Path(root) / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
