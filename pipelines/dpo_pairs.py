"""DPO pair generation: the policy samples M responses per prompt, a scorer ranks them, the best
becomes `chosen` and the worst `rejected` (TRL's preference format), streamed through Ray Data.

Scorers (`align.pairs.scorer`):
  reward    the W2S reward model in RewardActors (in-process, same code as the server)
  endpoint  a running `w2s serve` (POST /v1/rank), e.g. on another cluster
  weak      the weak ensemble, seed 003 Eq. 10-11: y_c = argmax_m sum_i lambda_i P(y_m | theta_i),
            y_r = argmin_m (sequence probabilities by teacher forcing in each weak actor)

Output: <run_dir>/dpo_pairs/train.parquet with prompt, chosen, rejected (+ id, scores, all
responses); rows whose responses are all equal after cleaning give no pair and are left out.
Shards of finished batches are kept under _shards/, so an interrupted run resumes.

    w2s run configs/tiny_align.yaml      (the alignment stages of the end-to-end run)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.runner import Role, StreamStage, run_stage, write_atomic

SCORERS = ("reward", "endpoint", "weak")


@dataclass
class PairsConfig:
    num_responses: int = 4  # M samples per prompt
    max_new_tokens: int = 32
    temperature: float = 1.0
    prompt_format: str = "{prompt}\nAnswer:"  # what the policy is given (TRL's `prompt`)
    first_line: bool = True  # a response ends at its first newline
    scorer: str = "reward"
    endpoint: str = ""  # scorer=endpoint: http://host:port of `w2s serve`
    token_env: str = "W2S_SERVE_TOKEN"  # bearer token for the endpoint, read from this variable
    batch_rows: int = 8
    seed: int = 0

    def __post_init__(self):
        if self.num_responses < 2:
            raise ValueError("num_responses: must be >= 2 (a pair needs two responses)")
        for name in ("max_new_tokens", "batch_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")
        if self.temperature <= 0:
            raise ValueError("temperature: must be > 0 (greedy decoding gives one response)")
        if "{prompt}" not in self.prompt_format:
            raise ValueError("prompt_format: must contain {prompt}")
        if self.scorer not in SCORERS:
            raise ValueError(f"scorer: must be one of {SCORERS}, got {self.scorer!r}")
        if self.scorer == "endpoint" and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError("endpoint: scorer endpoint needs an http(s):// URL")


def clean(text: str, first_line: bool) -> str:
    text = text.strip()
    return text.split("\n", 1)[0].strip() if first_line else text


def weak_ensemble_scores(logps: list[list[float]], weights: list[float]) -> list[float]:
    """Seed 003 Eq. 10-11 score of each candidate m: sum_i lambda_i P(y_m | theta_i), with
    P = exp(sequence log-probability) of weak model i. logps: [N models][M candidates]."""
    p = np.exp(np.asarray(logps, dtype=np.float64))
    return (np.asarray(weights, dtype=np.float64)[:, None] * p).sum(0).tolist()


def pick_pair(responses: list[str], scores: list[float]) -> tuple[int, int] | None:
    """(best, worst) indices among distinct responses; None when fewer than two distinct ones."""
    if len(set(responses)) < 2:
        return None
    best, worst = int(np.argmax(scores)), int(np.argmin(scores))
    if responses[best] == responses[worst]:  # equal texts tie in score: take a different worst
        worst = min((i for i, r in enumerate(responses) if r != responses[best]), key=lambda i: scores[i])
    return best, worst


def pairs_batch(batch: pa.Table, *, actors: dict, kind: str, weights: list[float], cfg: PairsConfig,
                endpoint_token: str | None) -> pa.Table:
    """One Ray Data batch: generate on the policy actor, score, pick chosen / rejected."""
    import ray

    policy, scorers = actors["policy"][0], actors.get(kind, [])
    rows = batch.to_pylist()
    prompts = [cfg.prompt_format.replace("{prompt}", r["prompt"]) for r in rows]
    seed = cfg.seed + int(hashlib.sha256(rows[0]["id"].encode()).hexdigest()[:8], 16)  # same batch, same samples
    gen = ray.get(policy.generate.remote(prompts, cfg.num_responses, cfg.max_new_tokens, cfg.temperature, seed))
    responses = [[clean(t, cfg.first_line) for t, _ in g] for g in gen]
    cands = [[x for x in rs if x] or [""] for rs in responses]
    if kind == "reward":
        scores = ray.get(scorers[0].score_rows.remote([r["prompt"] for r in rows], cands))
    elif kind == "endpoint":
        from serving.client import RewardClient

        client = RewardClient(cfg.endpoint, endpoint_token)
        scores = [client.rank(r["prompt"], c)["scores"] if len(c) > 1 else [0.0] for r, c in zip(rows, cands)]
    else:
        from actors.reward_model import regroup

        flat_p = [p for p, c in zip(prompts, cands) for _ in c]
        flat_c = [" " + x for c in cands for x in c]
        per_model = ray.get([a.sequence_logprobs.remote(flat_p, flat_c) for a in scorers])
        scores = regroup(weak_ensemble_scores([[lp for lp, _ in m] for m in per_model], weights),
                         [len(c) for c in cands])
    out = []
    for r, p, c, s in zip(rows, prompts, cands, scores):
        pair = pick_pair(c, s)
        out.append({"id": r["id"], "prompt": p, "chosen": c[pair[0]] if pair else None,
                    "rejected": c[pair[1]] if pair else None, "score_chosen": float(s[pair[0]]) if pair else None,
                    "score_rejected": float(s[pair[1]]) if pair else None, "responses": c,
                    "scores": [float(x) for x in s]})
    return pa.Table.from_pylist(out, schema=PAIRS_SCHEMA)


PAIRS_SCHEMA = pa.schema([("id", pa.string()), ("prompt", pa.string()), ("chosen", pa.string()),
                          ("rejected", pa.string()), ("score_chosen", pa.float64()), ("score_rejected", pa.float64()),
                          ("responses", pa.list_(pa.string())), ("scores", pa.list_(pa.float64()))])


def pairs_stage(split_dir: Path, out_dir: Path, cfg: PairsConfig, policy_spec: str, policy_backend,
                reward_dir: str | None, reward_backend, weak, cluster_cfg, log=print) -> dict:
    """Config in, dpo_pairs/train.parquet out (through the streaming-stage runner). Skipped when
    complete; continues a partial run."""
    from actors.reward import RewardActor
    from actors.strong import StrongActor
    from actors.weak import WeakActor

    out_dir = Path(out_dir)
    roles = [Role("policy", StrongActor, [{"name": "policy", "spec": policy_spec, "backend": policy_backend}],
                  ["policy"])]
    if cfg.scorer == "reward":
        roles.append(Role("reward", RewardActor, [{"name": "reward", "model_dir": reward_dir, "backend": reward_backend}]))
    elif cfg.scorer == "weak":
        roles.append(Role("weak", WeakActor, [{"name": m.name, "spec": m.spec, "backend": m.backend}
                                              for m in weak.models]))
    return run_stage(StreamStage(
        kind="dpo_pairs", split_dir=Path(split_dir), out_dir=out_dir,
        config={"pairs": asdict(cfg), "policy": policy_spec, "reward": reward_dir,
                "weak": [asdict(m) for m in weak.models] if cfg.scorer == "weak" else None},
        what="policy/scorer", describe=(f"policy {policy_spec}, {cfg.num_responses} responses per prompt, "
                                        f"scorer {cfg.scorer}"),
        roles=roles, batch_fn=pairs_batch, batch_rows=cfg.batch_rows, max_in_flight=2,
        batch_kwargs={"kind": cfg.scorer, "weights": list(weak.weights), "cfg": cfg,
                      "endpoint_token": os.environ.get(cfg.token_env) or None},
        schema=PAIRS_SCHEMA, finalize=lambda table, run: finalize_pairs(out_dir, table)), cluster_cfg, log)


def finalize_pairs(out_dir: Path, table: pa.Table) -> dict:
    import pyarrow.compute as pc

    pairs = table.filter(pc.is_valid(table["chosen"]))
    path = write_atomic(pairs, out_dir / "train.parquet")
    margin = np.array(pairs["score_chosen"].to_pylist()) - np.array(pairs["score_rejected"].to_pylist())
    summary = {"prompts": table.num_rows, "pairs": pairs.num_rows, "no_pair": table.num_rows - pairs.num_rows,
               "mean_margin": float(margin.mean()) if len(margin) else None, "path": str(path)}
    summary["line"] = f"{summary['pairs']} pairs, mean score margin {summary['mean_margin']}"
    return summary
