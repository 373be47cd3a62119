"""Ray Serve deployment of the W2S reward model: a FastAPI ingress with dynamic batching, token auth,
request validation and deadlines on slow uploads.

On a laptop (starts a local Ray cluster, serves until Ctrl-C):

    w2s serve configs/serve.yaml model_dir=runs/align/reward_model/model
    W2S_SERVE_TOKEN=secret w2s serve configs/serve.yaml model_dir=... host=0.0.0.0 replicas=2

On a cluster (the repo root is the job's working_dir; the job keeps running while it serves):

    ray job submit --working-dir . -- w2s serve configs/serve.yaml model_dir=/shared/reward_model num_gpus=0.5
    serve run serving.server:app_builder config=configs/serve.yaml model_dir=/shared/reward_model

(`serve run` keeps Serve's own HTTP host/port, 127.0.0.1:8000 unless Serve already runs.)

Endpoints (JSON; every one but /healthz needs the token when one is set: `Authorization: Bearer <token>`,
or in the URL as `http://user:<token>@host:port/...` or `?token=<token>`; serving/guard.py):

    POST /v1/score    {"items": [{"prompt", "response"}, ...]}     -> {"rewards": [...]}        (bt)
    POST /v1/compare  {"prompt", "responses": [a, b]}              -> {"p_first", "p_second", "preferred", "rewards"}
    POST /v1/rank     {"prompt", "responses": [r1, ..., rN]}       -> {"scores", "order", "chosen", "rejected"}
    POST /get_reward  {"query": [...], "prompts"?, "labels"?}      -> {"rewards", "scores", "extra_logs"}  (OpenRLHF)
                      long samples: cut from the left (serve.long_inputs), flagged in extra_logs
    GET  /healthz                                                  -> {"status": "ok", "kind", "model", "replica"}
    GET  /v1/stats                                                 -> {"forwards", "items", "largest_forward", ...}
    GET  /openapi.json, /docs

Dynamic batching counts items (texts for a bt model, option pairs for a judge): the items of
concurrent requests are scored in one forward of up to `max_batch_size` items. Forwards run in
a worker thread, one at a time per replica, so the event loop keeps accepting requests.

A body must arrive within serve.body_timeout_s (else 408), and at most serve.max_body_readers
slow uploads per replica are read at once (else 503), so stalled uploads cannot hold every
max_ongoing_requests slot. docs/serving.md: OpenRLHF and veRL setup, the limits, the measurements.

(No `from __future__ import annotations` here: Serve's class-based FastAPI views need the
request models as real annotations.)
"""

import asyncio
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.config import ServeConfig
from serving.guard import Guard, error as _json, rel_path as _rel_path
from serving.long_inputs import WindowCounter, extra_logs, keep_end
from actors.reward_model import RewardScorer, preference, ranking, read_reward_meta, round_robin, win_rates


# ---------------------------------------------------------------- request / response schemas

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScoreItem(_Strict):
    prompt: str = Field(min_length=1)
    response: str = Field(min_length=1)


class ScoreRequest(_Strict):
    items: list[ScoreItem] = Field(min_length=1, description="(prompt, response) pairs; at most serve.max_items")


class ScoreResponse(BaseModel):
    rewards: list[float]


class CompareRequest(_Strict):
    prompt: str = Field(min_length=1)
    responses: list[str] = Field(min_length=2, max_length=2, description="exactly two responses [a, b]")


class CompareResponse(BaseModel):
    p_first: float = Field(description="P(responses[0] preferred over responses[1])")
    p_second: float
    preferred: int = Field(description="index of the preferred response (0 on a tie)")
    rewards: list[float] | None = Field(None, description="bt rewards of both responses; null for a judge")


class RankRequest(_Strict):
    prompt: str = Field(min_length=1)
    responses: list[str] = Field(min_length=2, description="N >= 2 responses; at most serve.max_items")


class RankResponse(BaseModel):
    scores: list[float] = Field(description="bt: rewards; judge: mean pairwise win probability")
    order: list[int] = Field(description="response indices, best first")
    chosen: int
    rejected: int


class GetRewardRequest(BaseModel):
    """OpenRLHF's remote reward model request (`--reward.remote_url http://host:port/get_reward`)."""
    model_config = ConfigDict(extra="ignore")
    query: list[str] = Field(min_length=1, description="full texts: prompt + response")
    prompts: list[str] | None = Field(None, description="each query's prompt; the response is what follows it")
    labels: list[Any] | None = Field(None, description="accepted and ignored (a reward model needs no labels)")


class GetRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]] = Field(
        description="per query: w2s_reward, w2s_truncated (1: cut to fit), w2s_dropped_chars (serve.max_chars), "
                    "w2s_dropped_tokens (the model's window)")


class Health(BaseModel):
    status: str
    kind: str
    model: str
    replica: str  # which Serve replica answered (tells the replicas of a deployment apart)


class Stats(BaseModel):
    """Model calls of the replica that answered (one replica's counts when there are several)."""
    forwards: int = Field(description="scorer calls (batched forwards)")
    items: int = Field(description="texts (bt) or pairs (judge) scored")
    largest_forward: int = Field(description="most items in one scorer call")
    busy_s: float = Field(description="seconds spent in scorer calls")
    batching: bool
    max_batch_size: int


# ---------------------------------------------------------------- app, guard, error messages

app = FastAPI(title="W2S reward model", version="1.0",
              description="Bradley-Terry reward model or pairwise judge trained weak-to-strong (w2s).")


def _replica_state():
    """What the guard needs from the replica that serves the request (built by Serve, not here)."""
    server = serve.get_replica_context().servable_object
    return server.cfg, server.body_readers


app.add_middleware(Guard, state=_replica_state)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError):
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return _json(400, f"body: invalid JSON ({first.get('ctx', {}).get('error', 'decode error')})")
    ctype = request.headers.get("content-type", "")
    if tuple(first.get("loc", ())) == ("body",) and "json" not in ctype and first.get("type") != "missing":
        return _json(415, f"content-type: send a JSON body with Content-Type: application/json (got {ctype!r})")
    messages = [f"{_loc(e.get('loc', ()))}: {e.get('msg')}" for e in errors[:5]]
    return _json(422, "; ".join(messages))


def _loc(loc) -> str:
    parts = [str(p) for p in loc]
    if parts[:1] == ["body"]:
        parts = parts[1:]
    return ".".join(parts) or "body"


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException):
    path = _rel_path(request.scope)
    if exc.status_code == 404 and exc.detail == "Not Found":
        return _json(404, f"no endpoint {path}; endpoints: POST /v1/score, /v1/compare, /v1/rank, /get_reward, "
                          "GET /healthz, /openapi.json")
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        return _json(400, "body: could not be parsed as JSON (bad encoding or a number out of range)")
    if exc.status_code == 405:
        return _json(405, f"method {request.method} not allowed on {path}", exc.headers)
    return _json(exc.status_code, str(exc.detail), exc.headers)


def _check_strings(cfg: ServeConfig, named: list[tuple[str, str]]) -> None:
    for name, text in named:
        if len(text) > cfg.max_chars:
            raise HTTPException(422, f"{name}: {len(text)} characters; at most serve.max_chars = {cfg.max_chars}")


def _check_count(cfg: ServeConfig, name: str, n: int) -> None:
    if n > cfg.max_items:
        raise HTTPException(422, f"{name}: {n} items; at most serve.max_items = {cfg.max_items} per request")


def _check_window(over: list[int], window: int) -> None:
    for i, extra in enumerate(over):
        if extra:
            raise HTTPException(422, f"query.{i}: {window + extra} tokens; the reward model reads at most {window} "
                                     "(max_length in w2s_reward.json) and serve.long_inputs = refuse")


def _prompt_and_responses(req) -> list[tuple[str, str]]:
    return [("prompt", req.prompt)] + [(f"responses.{i}", r) for i, r in enumerate(req.responses)]


def split_query(query: str, prompt: str | None, where: str) -> tuple[str, str]:
    """(prompt, response) of one OpenRLHF query: the text after its prompt (which may follow a BOS
    or padding prefix); without a prompt, the whole query is the response."""
    if prompt is None:
        return "", query
    if query.startswith(prompt):
        return prompt, query[len(prompt):]
    if prompt and prompt in query:
        return prompt, query.split(prompt, 1)[1]
    raise HTTPException(422, f"{where}: the query does not contain its prompt")


# ---------------------------------------------------------------- the deployment

@serve.deployment
@serve.ingress(app)
class RewardServer:
    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.scorer = RewardScorer.from_dir(cfg.model_dir, cfg.backend)
        self._lock = asyncio.Lock()  # one forward at a time per replica
        self.body_readers = asyncio.Semaphore(cfg.max_body_readers)  # serving/guard.py
        self.window = WindowCounter(self.scorer) if self.scorer.kind == "bt" else None
        self.stats = {"forwards": 0, "items": 0, "largest_forward": 0, "busy_s": 0.0}
        for fn in (self._rewards_batch, self._pairs_batch):
            fn.set_max_batch_size(cfg.max_batch_size)
            fn.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    # -- model calls: batched across requests, or one request at a time

    async def _serial(self, fn, *args):
        async with self._lock:
            t = time.perf_counter()
            out = await asyncio.to_thread(fn, *args)
            self.stats["busy_s"] += time.perf_counter() - t
        self.stats["forwards"] += 1
        self.stats["items"] += len(args[0])
        self.stats["largest_forward"] = max(self.stats["largest_forward"], len(args[0]))
        return out

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _rewards_batch(self, items: list[tuple[str, str]]) -> list[float]:
        return await self._serial(self.scorer.score, [p for p, _ in items], [r for _, r in items])

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _pairs_batch(self, items: list[tuple[str, str, str]]) -> list[float]:
        return await self._serial(self.scorer.judge, *[list(x) for x in zip(*items)])

    def _need_bt(self) -> None:
        if self.scorer.kind != "bt":
            raise HTTPException(400, "scalar rewards need a bt reward model; this server serves a pairwise "
                                     "judge (use /v1/compare or /v1/rank)")

    async def _rewards(self, prompts: list[str], responses: list[str]) -> list[float]:
        self._need_bt()
        if not self.cfg.batching:
            return await self._serial(self.scorer.score, prompts, responses)
        return list(await asyncio.gather(*[self._rewards_batch((p, r)) for p, r in zip(prompts, responses)]))

    async def _pairs(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        if not self.cfg.batching:
            return await self._serial(self.scorer.judge, prompts, a, b)
        return list(await asyncio.gather(*[self._pairs_batch(x) for x in zip(prompts, a, b)]))

    # -- endpoints

    @app.get("/healthz", response_model=Health)
    async def healthz(self):
        return {"status": "ok", "kind": self.scorer.kind, "model": Path(self.cfg.model_dir).name,
                "replica": serve.get_replica_context().replica_id.unique_id}

    @app.get("/v1/stats", response_model=Stats)
    async def stats_(self):
        return {**self.stats, "batching": self.cfg.batching, "max_batch_size": self.cfg.max_batch_size}

    @app.post("/v1/score", response_model=ScoreResponse)
    async def score(self, req: ScoreRequest):
        _check_count(self.cfg, "items", len(req.items))
        _check_strings(self.cfg, [(f"items.{i}.{k}", getattr(it, k)) for i, it in enumerate(req.items)
                                  for k in ("prompt", "response")])
        return {"rewards": await self._rewards([it.prompt for it in req.items], [it.response for it in req.items])}

    @app.post("/v1/compare", response_model=CompareResponse)
    async def compare(self, req: CompareRequest):
        _check_strings(self.cfg, _prompt_and_responses(req))
        (a, b), rewards = req.responses, None
        if self.scorer.kind == "bt":
            rewards = await self._rewards([req.prompt] * 2, [a, b])
            p = preference(*rewards)
        else:
            p = (await self._pairs([req.prompt], [a], [b]))[0]
        return {"p_first": p, "p_second": 1 - p, "preferred": 0 if p >= 0.5 else 1, "rewards": rewards}

    @app.post("/v1/rank", response_model=RankResponse)
    async def rank(self, req: RankRequest):
        n = len(req.responses)
        _check_count(self.cfg, "responses", n)
        _check_strings(self.cfg, _prompt_and_responses(req))
        if self.scorer.kind == "bt":
            return ranking(await self._rewards([req.prompt] * n, req.responses))
        pairs = round_robin(n)
        if len(pairs) > self.cfg.max_pairs:
            raise HTTPException(422, f"responses: {n} responses need {len(pairs)} judge pairs; at most "
                                     f"serve.max_pairs = {self.cfg.max_pairs}")
        p = await self._pairs([req.prompt] * len(pairs), [req.responses[i] for i, _ in pairs],
                              [req.responses[j] for _, j in pairs])
        return ranking(win_rates(n, pairs, p))

    @app.post("/get_reward", response_model=GetRewardResponse)
    async def get_reward(self, req: GetRewardRequest):
        self._need_bt()
        prompts, responses, chars, tokens = await self._get_reward_inputs(req)
        rewards = await self._rewards(prompts, responses)
        return {"rewards": rewards, "scores": rewards, "extra_logs": extra_logs(rewards, chars, tokens)}

    async def _get_reward_inputs(self, req: GetRewardRequest):
        """(prompts, responses, characters cut, tokens cut) per query; long ones refused or cut."""
        n, refuse = len(req.query), self.cfg.long_inputs == "refuse"
        _check_count(self.cfg, "query", n)
        for name, extra in (("prompts", req.prompts), ("labels", req.labels)):
            if extra is not None and len(extra) != n:
                raise HTTPException(422, f"{name}: {len(extra)} items for {n} queries")
        if refuse:
            _check_strings(self.cfg, [(f"query.{i}", q) for i, q in enumerate(req.query)]
                           + [(f"prompts.{i}", p) for i, p in enumerate(req.prompts or [])])
        split = [split_query(q, req.prompts[i] if req.prompts is not None else None, f"prompts.{i}")
                 for i, q in enumerate(req.query)]
        prompts, responses, chars = zip(*[keep_end(p, r, self.cfg.max_chars) for p, r in split])
        tokens = await self.window.overflow(list(prompts), list(responses))
        if refuse:
            _check_window(tokens, self.window.window)
        return list(prompts), list(responses), list(chars), tokens


# ---------------------------------------------------------------- starting it

def build_app(cfg: ServeConfig):
    """The bound Serve application for a config (replicas and resources from the config)."""
    env = {"TOKENIZERS_PARALLELISM": "false", **cfg.cluster.actor_env}
    return RewardServer.options(
        num_replicas=cfg.replicas, max_ongoing_requests=cfg.max_ongoing_requests,
        logging_config={"enable_access_log": cfg.access_log},
        ray_actor_options={"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus, "runtime_env": {"env_vars": env}},
    ).bind(cfg)


def app_builder(args: dict):
    """`serve run serving.server:app_builder config=configs/serve.yaml model_dir=...`"""
    from cluster.loader import load_config

    args = dict(args)
    path = args.pop("config", None)
    # `serve run ... key=value` gives strings (YAML-parsed like any override); a Serve config
    # file gives typed values, written as JSON (YAML reads it) so null stays null, not "None"
    over = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in args.items()]
    cfg = load_config(ServeConfig, path, over)
    return build_app(_absolute(cfg))


def _absolute(cfg: ServeConfig) -> ServeConfig:
    read_reward_meta(cfg.model_dir)  # a clear error here, not a replica that fails to start
    return dataclasses.replace(cfg, model_dir=str(Path(cfg.model_dir).expanduser().resolve()))


def serve_reward(cfg: ServeConfig) -> str:
    """Start Serve (HTTP on cfg.host:cfg.port) on the configured or local Ray cluster and deploy the
    reward model app; returns its URL. Returns once the replicas are healthy."""
    from cluster.connect import connect

    cfg = _absolute(cfg)
    connect(cfg.cluster, gpus_needed=math.ceil(cfg.replicas * cfg.num_gpus))
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    _check_proxy(cfg)
    serve.run(build_app(cfg), name=cfg.name, route_prefix=cfg.route_prefix, blocking=False)
    return cfg.url()


def _check_proxy(cfg: ServeConfig) -> None:
    """Serve's HTTP proxy keeps the host/port of its first start on a cluster."""
    from ray.serve.context import _get_global_client

    http = _get_global_client().http_config
    if (http.host, http.port) != (cfg.host, cfg.port):
        raise ValueError(f"serve.port: Serve already runs on this cluster with HTTP at {http.host}:{http.port}; "
                         f"use host={http.host} port={http.port} or shut Serve down first (serve shutdown)")


def serve_forever(cfg: ServeConfig, log=print) -> None:
    """`w2s serve`: deploy, print how to call it, block until Ctrl-C, then delete the app."""
    url = serve_reward(cfg)
    kind = read_reward_meta(cfg.model_dir)["kind"]
    auth = ' -H "Authorization: Bearer $W2S_SERVE_TOKEN"' if cfg.token else ""
    log(f"serving the {kind} reward model {cfg.model_dir} at {url}  (Ctrl-C to stop)")
    log(f"  curl{auth} -H 'Content-Type: application/json' {url}/v1/score "
        "-d '{\"items\": [{\"prompt\": \"2+2?\", \"response\": \"4\"}]}'")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log("stopping")
        serve.delete(cfg.name)
