"""serving/: the reward scorer in-process, and the Ray Serve app over real HTTP with tiny models.

One module-scoped Serve instance holds two apps on one free port: a Bradley-Terry model at "/"
(bearer token) and a pairwise judge at "/judge" (no token), both with dynamic batching. The
unbatched path runs in benchmarks/serve_load.py.
"""

from __future__ import annotations

import json
import math
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from actors.backend import BackendConfig

TOKEN = "test-token-4f9a"
FP32 = BackendConfig(dtype="float32", max_length=128, max_batch_tokens=1024)
LIMITS = dict(max_items=8, max_chars=200, max_body_bytes=8192)
PROMPTS = ["What is 2+2?", "Name a colour.", "Translate 'chat' to English, please, in one word."]
RESPONSES = ["4", "Blue, like the sky on a clear summer day.", "cat"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _save(model, tok, path, kind, **meta):
    from actors.reward_model import save_reward_meta

    model.save_pretrained(path)
    tok.save_pretrained(path)
    save_reward_meta(path, kind, max_length=128, **meta)
    return str(path)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    from actors.registry import load_model

    root = tmp_path_factory.mktemp("reward_models")
    bt = _save(*load_model("tiny:llama:7", "classifier", num_labels=1), root / "bt", "bt")
    lm, tok = load_model("tiny:llama:7")
    judge = _save(lm, tok, root / "judge", "judge", template={"template": "{prompt}\n{options}\nAnswer:"})
    judge_text = _save(lm, tok, root / "judge_text", "judge",
                       template={"template": "Question: {prompt}\nChoices: {options}\nAnswer:",
                                 "option_line": "{option}", "option_sep": ", ", "answer": "text"})
    # configs/align.yaml's form: each solution a continuation of the prompt, the options not shown
    judge_hidden = _save(lm, tok, root / "judge_hidden", "judge",
                         template={"template": "{prompt}\nSolution:", "option_line": "{option}", "answer": "text"})
    return {"bt": bt, "judge": judge, "judge_text": judge_text, "judge_hidden": judge_hidden}


@pytest.fixture(scope="module")
def scorers(model_dirs):
    from actors.reward_model import RewardScorer

    return {k: RewardScorer.from_dir(v, FP32) for k, v in model_dirs.items()}


@pytest.fixture(scope="module")
def servers(ray_cluster, model_dirs):
    from ray import serve

    from serving.config import ServeConfig
    from serving.server import serve_reward

    port = _free_port()
    common = dict(port=port, num_cpus=0.25, backend=FP32, **LIMITS)
    bt = ServeConfig(model_dir=model_dirs["bt"], name="w2s-test-bt", route_prefix="/", token=TOKEN,
                     max_batch_size=4, batch_wait_timeout_s=0.05, **common)
    judge = ServeConfig(model_dir=model_dirs["judge"], name="w2s-test-judge", route_prefix="/judge", token="",
                        token_env="", max_batch_size=3, **common)
    urls = {"bt": serve_reward(bt), "judge": serve_reward(judge), "port": port}
    yield urls
    serve.shutdown()


def _post(url, body, token=TOKEN, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(url, json=body, headers=headers, timeout=60, **kw)


def _items(prompts, responses):
    return {"items": [{"prompt": p, "response": r} for p, r in zip(prompts, responses)]}


# ------------------------------------------------------------------ in-process scorer

def test_meta_validation(tmp_path):
    from actors.reward_model import read_reward_meta, save_reward_meta

    with pytest.raises(ValueError, match="kind"):
        save_reward_meta(tmp_path, "ppo")
    with pytest.raises(ValueError, match="format"):
        save_reward_meta(tmp_path, "bt", format="{prompt} only")
    with pytest.raises(ValueError, match="template.answer"):
        save_reward_meta(tmp_path, "judge", template={"answer": "maybe"})
    with pytest.raises(ValueError, match="template.colour: unknown field"):
        save_reward_meta(tmp_path, "judge", template={"colour": "red"})
    with pytest.raises(ValueError, match="w2s_reward.json"):
        read_reward_meta(tmp_path)
    save_reward_meta(tmp_path, "bt", chat=False, max_length=64)
    assert read_reward_meta(tmp_path) == {"kind": "bt", "format": "{prompt}\n{response}", "chat": False,
                                          "max_length": 64}


def test_bt_scorer(scorers):
    from actors.reward_model import preference

    bt = scorers["bt"]
    r = bt.score(PROMPTS, RESPONSES)
    assert len(r) == 3 and all(math.isfinite(x) for x in r)
    # one text at a time gives the same rewards as a padded batch (left padding, real positions)
    assert [bt.score([p], [x])[0] for p, x in zip(PROMPTS, RESPONSES)] == pytest.approx(r, abs=1e-5)
    p = bt.compare(PROMPTS[:2], RESPONSES[:2], RESPONSES[1:])
    assert p[0] == pytest.approx(preference(r[0], bt.score([PROMPTS[0]], [RESPONSES[1]])[0]), abs=1e-6)
    ranked = bt.rank(PROMPTS[0], RESPONSES)
    assert ranked["scores"] == pytest.approx(bt.score([PROMPTS[0]] * 3, RESPONSES), abs=1e-5)
    _check_ranking(ranked)
    with pytest.raises(ValueError, match="at least 2"):
        bt.rank(PROMPTS[0], ["only one"])


@pytest.mark.parametrize("which", ["judge", "judge_text", "judge_hidden"])
def test_judge_scorer(scorers, which):
    judge = scorers[which]
    with pytest.raises(ValueError, match="bt reward model"):
        judge.score(PROMPTS, RESPONSES)
    ab = judge.compare(PROMPTS, RESPONSES, RESPONSES[::-1])
    ba = judge.compare(PROMPTS, RESPONSES[::-1], RESPONSES)
    assert [x + y for x, y in zip(ab, ba)] == pytest.approx([1, 1, 1], abs=1e-6)  # both orders averaged
    ranked = judge.rank(PROMPTS[0], RESPONSES)
    _check_ranking(ranked)
    assert sum(ranked["scores"]) == pytest.approx(len(RESPONSES) / 2, abs=1e-6)  # win rates share n(n-1)/2 wins


@pytest.mark.parametrize("which", ["judge", "judge_hidden"])
def test_judge_win_rates_by_hand(scorers, which):
    judge = scorers[which]
    a, b, c = RESPONSES
    p_ab, p_ac, p_bc = judge.compare([PROMPTS[1]] * 3, [a, a, b], [b, c, c])
    ranked = judge.rank(PROMPTS[1], [a, b, c])
    expected = [(p_ab + p_ac) / 2, (1 - p_ab + p_bc) / 2, (2 - p_ac - p_bc) / 2]
    assert ranked["scores"] == pytest.approx(expected, abs=1e-6)


def test_hidden_options_judge_scores_each_response_once(scorers):
    """With the options not shown, one order and one row of all responses give what the pairwise
    judge in both orders gives (render + score_texts done by hand here), in fewer forward passes."""
    from actors.prompts import render

    hidden, shown = scorers["judge_hidden"], scorers["judge_text"]
    assert hidden.options_hidden and not shown.options_hidden and not scorers["judge"].options_hidden
    prompt, (a, b, c) = PROMPTS[2], RESPONSES
    both = []
    for order in ((0, 1), (1, 0)):
        text, scored = render(prompt, [a, b], order, hidden.template)
        both.append(hidden.backend.score_texts([text], [scored])[0])
    p_ab = (both[0][0] + both[1][1]) / 2
    assert both[0][0] == pytest.approx(both[1][1], abs=1e-6)  # hidden options: the order changes nothing
    assert hidden.compare([prompt], [a], [b])[0] == pytest.approx(p_ab, abs=1e-6)
    rows = hidden.rank_rows([prompt, PROMPTS[0]], [[a, b, c], [c, a]])
    assert rows[0]["scores"][0] == pytest.approx((p_ab + hidden.compare([prompt], [a], [c])[0]) / 2, abs=1e-6)
    assert rows[1]["scores"] == pytest.approx(hidden.rank(PROMPTS[0], [c, a])["scores"], abs=1e-6)  # = row by row
    seen = hidden.backend.tokens_seen
    hidden.rank(prompt, [a, b, c])
    ranked = hidden.backend.tokens_seen - seen
    hidden.judge([prompt] * 3, [a, a, b], [b, c, c])  # the 3 round-robin pairs, one order each
    assert ranked < hidden.backend.tokens_seen - seen - ranked  # the prompt once, each response once


def test_backend_reward_errors(model_dirs):
    import numpy as np

    from actors.backend import ModelBackend
    from actors.hf_backend import HFBackend

    lm = HFBackend(model_dirs["judge"], FP32)
    with pytest.raises(ValueError, match="num_labels=1"):
        lm.rewards(["text"])

    class Minimal(ModelBackend):
        def score_options(self, texts, labels, chat=False):
            return [np.ones(len(row)) / len(row) for row in labels]

        def sequence_logprobs(self, prompts, continuations, chat=False):
            return [(0.0, 1)] * len(prompts)

        def generate(self, prompts, num_samples=1, max_new_tokens=64, temperature=0.0, seed=0, chat=False):
            return [[("", 0.0)]] * len(prompts)

        def info(self):
            return {}

    with pytest.raises(NotImplementedError, match="backend.kind=hf"):
        Minimal().rewards(["text"])


def _check_ranking(ranked):
    s, order = ranked["scores"], ranked["order"]
    assert sorted(order) == list(range(len(s)))
    assert [s[i] for i in order] == sorted(s, reverse=True)
    assert ranked["chosen"] == max(range(len(s)), key=lambda i: (s[i], -i)) == order[0]
    assert ranked["rejected"] == order[-1] and s[ranked["rejected"]] == min(s)


# ------------------------------------------------------------------ config

def test_config_validation(monkeypatch):
    from serving.config import ServeConfig

    monkeypatch.delenv("W2S_SERVE_TOKEN", raising=False)
    with pytest.raises(ValueError, match="^token: "):
        ServeConfig(model_dir="m", host="0.0.0.0")
    with pytest.raises(ValueError, match="^token: "):
        ServeConfig(model_dir="m", host="10.1.2.3")
    assert ServeConfig(model_dir="m", host="0.0.0.0", token="t").token == "t"
    assert ServeConfig(model_dir="m", host="localhost").token == ""
    assert ServeConfig(model_dir="m", host="::1").url() == "http://[::1]:8000"
    monkeypatch.setenv("W2S_SERVE_TOKEN", "from-env")
    cfg = ServeConfig(model_dir="m", host="0.0.0.0")
    assert cfg.token == "from-env" and "from-env" not in repr(cfg)
    bad = [({"model_dir": ""}, "serve.model_dir"), ({"replicas": 0}, "serve.replicas"),
           ({"num_gpus": 0.3}, "serve.num_gpus"), ({"num_gpus": -1.0}, "serve.num_gpus"),
           ({"num_cpus": -1.0}, "serve.num_cpus"), ({"port": 70000}, "serve.port"),
           ({"max_batch_size": 0}, "serve.max_batch_size"), ({"max_items": 1}, "serve.max_items"),
           ({"max_body_bytes": 10}, "serve.max_body_bytes"), ({"route_prefix": "v1"}, "serve.route_prefix"),
           ({"batch_wait_timeout_s": -1.0}, "serve.batch_wait_timeout_s")]
    for over, field in bad:
        with pytest.raises(ValueError, match="^" + field.removeprefix("serve.") + ": "):  # the root's own keys
            ServeConfig(**{"model_dir": "m", **over})
    assert ServeConfig(model_dir="m", num_gpus=0.5, replicas=2).num_gpus == 0.5


def test_yaml_config_and_overrides(monkeypatch):
    from pathlib import Path

    from cluster.loader import load_config
    from serving.config import ServeConfig

    monkeypatch.delenv("W2S_SERVE_TOKEN", raising=False)
    yaml_path = Path(__file__).resolve().parents[1] / "configs" / "serve.yaml"
    cfg = load_config(ServeConfig, yaml_path, ["model_dir=/m", "replicas=2", "num_gpus=0.5", "backend.dtype=float32"])
    got = (cfg.model_dir, cfg.replicas, cfg.num_gpus, cfg.backend.dtype, cfg.batching)
    assert got == ("/m", 2, 0.5, "float32", True)
    with pytest.raises(ValueError, match="replicas: expected int"):
        load_config(ServeConfig, yaml_path, ["replicas=two"])
    with pytest.raises(ValueError, match="colour: unknown field"):
        load_config(ServeConfig, yaml_path, ["colour=red"])
    with pytest.raises(ValueError, match="backend.dtype"):
        load_config(ServeConfig, yaml_path, ["backend.dtype=int4"])
    with pytest.raises(ValueError, match="^token: "):
        load_config(ServeConfig, yaml_path, ["host=0.0.0.0"])


def test_cli_rejects_public_host_without_token(monkeypatch, capsys):
    from pipelines.cli import main

    monkeypatch.delenv("W2S_SERVE_TOKEN", raising=False)
    assert main(["serve", "configs/serve.yaml", "model_dir=/m", "host=0.0.0.0"]) == 2
    assert "serve.token" in capsys.readouterr().err


# ------------------------------------------------------------------ the HTTP app

def test_score_matches_in_process(servers, scorers):
    expected = scorers["bt"].score(PROMPTS, RESPONSES)
    r = _post(servers["bt"] + "/v1/score", _items(PROMPTS, RESPONSES))
    assert r.status_code == 200, r.text
    assert r.json()["rewards"] == pytest.approx(expected, abs=1e-4)


def test_concurrent_requests_are_batched_correctly(servers, scorers):
    """Items of concurrent requests share forwards (max_batch_size 4); each gets its own rewards."""
    bodies = [(PROMPTS[i % 3:] + PROMPTS[: i % 3], RESPONSES[i % 2:] + RESPONSES[: i % 2]) for i in range(12)]
    bodies = [(p[: len(r)], r) for p, r in bodies]
    def stats():
        auth = {"Authorization": f"Bearer {TOKEN}"}
        return requests.get(servers["bt"] + "/v1/stats", headers=auth, timeout=30).json()

    before = stats()
    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda b: _post(servers["bt"] + "/v1/score", _items(*b)), bodies))
    for (p, r), reply in zip(bodies, replies):
        assert reply.status_code == 200, reply.text
        assert reply.json()["rewards"] == pytest.approx(scorers["bt"].score(p, r), abs=1e-4)
    after = stats()
    assert after["items"] - before["items"] == sum(len(r) for _, r in bodies)
    # a request holds at most 3 items: a forward of 4 (max_batch_size) joined several requests
    assert after["largest_forward"] == 4 and after["forwards"] - before["forwards"] < len(bodies)


def test_compare_bt(servers, scorers):
    from actors.reward_model import preference

    a, b = RESPONSES[0], RESPONSES[1]
    ab = _post(servers["bt"] + "/v1/compare", {"prompt": PROMPTS[0], "responses": [a, b]}).json()
    ba = _post(servers["bt"] + "/v1/compare", {"prompt": PROMPTS[0], "responses": [b, a]}).json()
    ra, rb = scorers["bt"].score([PROMPTS[0]] * 2, [a, b])
    assert ab["p_first"] == pytest.approx(preference(ra, rb), abs=1e-4)
    assert ab["rewards"] == pytest.approx([ra, rb], abs=1e-4)
    assert ab["p_first"] + ba["p_first"] == pytest.approx(1, abs=1e-6)
    assert ab["p_second"] == pytest.approx(1 - ab["p_first"]) and ab["preferred"] == (0 if ab["p_first"] >= 0.5 else 1)


def test_rank_bt(servers, scorers):
    r = _post(servers["bt"] + "/v1/rank", {"prompt": PROMPTS[2], "responses": RESPONSES})
    assert r.status_code == 200, r.text
    ranked = r.json()
    _check_ranking(ranked)
    assert ranked["scores"] == pytest.approx(scorers["bt"].score([PROMPTS[2]] * 3, RESPONSES), abs=1e-4)


def test_get_reward_openrlhf_shape(servers, scorers):
    queries = [p + r for p, r in zip(PROMPTS, RESPONSES)]
    r = _post(servers["bt"] + "/get_reward", {"query": queries, "prompts": PROMPTS, "labels": ["x", None, 3]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"rewards", "scores", "extra_logs"} and len(out["rewards"]) == len(queries)
    expected = scorers["bt"].score(PROMPTS, RESPONSES)  # responses = queries minus their prompts
    assert out["rewards"] == pytest.approx(expected, abs=1e-4) and out["scores"] == out["rewards"]
    assert all(len(v) == len(queries) for v in out["extra_logs"].values())
    # a BOS-like prefix before the prompt is dropped with it
    prefixed = _post(servers["bt"] + "/get_reward", {"query": ["<s>" + queries[0]], "prompts": [PROMPTS[0]]}).json()
    assert prefixed["rewards"] == pytest.approx(expected[:1], abs=1e-4)
    # no prompts: the whole query is the response, with an empty prompt
    whole = _post(servers["bt"] + "/get_reward", {"query": queries}).json()
    assert whole["rewards"] == pytest.approx(scorers["bt"].score([""] * 3, queries), abs=1e-4)


def test_client(servers, scorers):
    from serving.client import RewardClient, RewardServerError

    client = RewardClient(servers["bt"], token=TOKEN)
    assert client.health()["kind"] == "bt"
    assert client.score(PROMPTS, RESPONSES) == pytest.approx(scorers["bt"].score(PROMPTS, RESPONSES), abs=1e-4)
    assert client.rank(PROMPTS[0], RESPONSES)["chosen"] in range(3)
    assert len(client.get_reward(["a b"], prompts=["a"])["rewards"]) == 1
    with pytest.raises(RewardServerError, match="responses") as e:
        client.rank(PROMPTS[0], ["one"])
    assert e.value.status == 422
    with pytest.raises(RewardServerError, match="bearer token"):
        RewardClient(servers["bt"]).score(PROMPTS, RESPONSES)


def test_auth_on(servers):
    url = servers["bt"]
    body = _items(PROMPTS[:1], RESPONSES[:1])
    assert _post(url + "/v1/score", body, token=None).status_code == 401
    assert _post(url + "/v1/score", body, token="wrong").status_code == 401
    assert _post(url + "/v1/score", body, token=TOKEN + "x").status_code == 401
    basic = requests.post(url + "/v1/score", json=body, headers={"Authorization": f"Basic {TOKEN}"}, timeout=30)
    assert basic.status_code == 401 and basic.headers.get("www-authenticate") == "Bearer"
    assert "bearer token" in basic.json()["detail"]
    for path in ("/v1/rank", "/v1/compare", "/get_reward", "/v1/stats", "/openapi.json", "/docs", "/nope"):
        assert requests.request("POST" if path.startswith(("/v1", "/get")) else "GET", url + path,
                                json={}, timeout=30).status_code == 401, path
    assert _post(url + "/v1/score", body).status_code == 200
    health = requests.get(url + "/healthz", timeout=30)  # open: load balancers probe it
    h = health.json()
    assert health.status_code == 200 and {k: h[k] for k in ("status", "kind", "model")} == {"status": "ok", "kind": "bt",
                                                                                          "model": "bt"}
    assert set(h) == {"status", "kind", "model", "replica"} and h["replica"]  # which Serve replica answered


def test_openapi_lists_request_schemas(servers):
    r = requests.get(servers["bt"] + "/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code == 200
    spec = r.json()
    schemas = spec["components"]["schemas"]
    for name in ("ScoreRequest", "ScoreItem", "CompareRequest", "RankRequest", "GetRewardRequest"):
        assert name in schemas, name
    assert set(spec["paths"]) >= {"/v1/score", "/v1/compare", "/v1/rank", "/get_reward", "/healthz"}
    ref = spec["paths"]["/v1/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/ScoreRequest")


def test_judge_app_auth_off(servers, scorers):
    url = servers["judge"]
    assert requests.get(url + "/healthz", timeout=30).json()["kind"] == "judge"
    a, b = RESPONSES[0], RESPONSES[2]
    ab = _post(url + "/v1/compare", {"prompt": PROMPTS[0], "responses": [a, b]}, token=None)
    ba = _post(url + "/v1/compare", {"prompt": PROMPTS[0], "responses": [b, a]}, token=None)
    assert ab.status_code == ba.status_code == 200, ab.text
    assert ab.json()["p_first"] + ba.json()["p_first"] == pytest.approx(1, abs=1e-5)
    assert ab.json()["p_first"] == pytest.approx(scorers["judge"].compare([PROMPTS[0]], [a], [b])[0], abs=1e-4)
    assert ab.json()["rewards"] is None
    ranked = _post(url + "/v1/rank", {"prompt": PROMPTS[1], "responses": RESPONSES}, token=None).json()
    _check_ranking(ranked)
    assert ranked["scores"] == pytest.approx(scorers["judge"].rank(PROMPTS[1], RESPONSES)["scores"], abs=1e-4)
    scalar = _post(url + "/v1/score", _items(PROMPTS, RESPONSES), token=None)
    assert scalar.status_code == 400 and "bt reward model" in scalar.json()["detail"]
    # the judge app lives under /judge; the token-protected bt app at / is unaffected
    assert _post(servers["bt"] + "/v1/score", _items(PROMPTS, RESPONSES), token=None).status_code == 401


def test_proxy_port_mismatch_is_refused(servers, model_dirs):
    from serving.config import ServeConfig
    from serving.server import serve_reward

    other = ServeConfig(model_dir=model_dirs["bt"], name="w2s-test-other", route_prefix="/other",
                        port=servers["port"] + 1 if servers["port"] < 65535 else 1024, num_cpus=0.25)
    with pytest.raises(ValueError, match="serve.port"):
        serve_reward(other)


# ------------------------------------------------------------------ hostile and malformed requests

def _nested(depth):
    return {"prompt": json.loads("[" * depth + "]" * depth), "response": "r"}


ITEM = {"prompt": "p", "response": "r"}
JSON = "application/json"

HOSTILE = [
    # id, method, path, raw body (bytes) or JSON object, content type, expected status, words in the message
    ("bad-json", "POST", "/v1/score", b'{"items": [', JSON, 400, "invalid JSON"),
    ("not-utf8", "POST", "/v1/score", b'{"items": "\xff\xfe"}', JSON, 400, "body"),
    ("form-content", "POST", "/v1/score", b"items=1", "application/x-www-form-urlencoded", 415, "content-type"),
    ("empty-body", "POST", "/v1/score", b"", JSON, 422, "body"),
    ("null-body", "POST", "/v1/score", None, JSON, 422, "body"),
    ("list-body", "POST", "/v1/score", [ITEM], JSON, 422, "body"),
    ("missing-items", "POST", "/v1/score", {}, JSON, 422, "items"),
    ("items-not-list", "POST", "/v1/score", {"items": "abc"}, JSON, 422, "items"),
    ("no-items", "POST", "/v1/score", {"items": []}, JSON, 422, "items"),
    ("missing-response", "POST", "/v1/score", {"items": [{"prompt": "p"}]}, JSON, 422, "items.0.response"),
    ("prompt-int", "POST", "/v1/score", {"items": [{"prompt": 5, "response": "r"}]}, JSON, 422, "items.0.prompt"),
    ("empty-response", "POST", "/v1/score", {"items": [ITEM, {"prompt": "p", "response": ""}]}, JSON, 422,
     "items.1.response"),
    ("nested-junk", "POST", "/v1/score", {"items": [_nested(50)]}, JSON, 422, "items.0.prompt"),
    ("null-prompt", "POST", "/v1/score", {"items": [{"prompt": None, "response": "r"}]}, JSON, 422, "items.0.prompt"),
    ("nan", "POST", "/v1/score", b'{"items": [{"prompt": NaN, "response": "r"}]}', JSON, 422, "items.0.prompt"),
    ("huge-float", "POST", "/v1/score", b'{"items": [{"prompt": 1e999, "response": "r"}]}', JSON, 422,
     "items.0.prompt"),
    ("huge-int", "POST", "/v1/rank", b'{"prompt": ' + b"9" * 5000 + b', "responses": ["a", "b"]}', JSON, 400, "body"),
    ("unknown-field", "POST", "/v1/score", {"items": [ITEM], "evil": 1}, JSON, 422, "evil"),
    ("unknown-item-field", "POST", "/v1/score", {"items": [{**ITEM, "x": 1}]}, JSON, 422, "items.0.x"),
    ("too-many-items", "POST", "/v1/score", {"items": [ITEM] * 9}, JSON, 422, "max_items"),
    ("too-long-string", "POST", "/v1/score", {"items": [{"prompt": "p", "response": "x" * 201}]}, JSON, 422,
     "items.0.response"),
    ("body-too-large", "POST", "/v1/score", {"items": [{"prompt": "p" * 9000, "response": "r"}]}, JSON, 413,
     "max_body_bytes"),
    ("compare-1-response", "POST", "/v1/compare", {"prompt": "p", "responses": ["a"]}, JSON, 422, "responses"),
    ("compare-3-responses", "POST", "/v1/compare", {"prompt": "p", "responses": ["a", "b", "c"]}, JSON, 422,
     "responses"),
    ("compare-empty-prompt", "POST", "/v1/compare", {"prompt": "", "responses": ["a", "b"]}, JSON, 422, "prompt"),
    ("rank-1-response", "POST", "/v1/rank", {"prompt": "p", "responses": ["a"]}, JSON, 422, "responses"),
    ("rank-too-many", "POST", "/v1/rank", {"prompt": "p", "responses": ["a"] * 9}, JSON, 422, "max_items"),
    ("rank-response-not-str", "POST", "/v1/rank", {"prompt": "p", "responses": ["a", {"b": 1}]}, JSON, 422,
     "responses.1"),
    ("get-reward-no-query", "POST", "/get_reward", {"prompts": ["p"]}, JSON, 422, "query"),
    ("get-reward-query-str", "POST", "/get_reward", {"query": "p r"}, JSON, 422, "query"),
    ("get-reward-prompts-count", "POST", "/get_reward", {"query": ["p r", "q s"], "prompts": ["p"]}, JSON, 422,
     "prompts"),
    ("get-reward-prompt-absent", "POST", "/get_reward", {"query": ["p r"], "prompts": ["zzz"]}, JSON, 422,
     "prompts.0"),
    ("unknown-endpoint", "POST", "/v1/nope", {"items": [ITEM]}, JSON, 404, "no endpoint"),
    ("wrong-method", "GET", "/v1/score", None, JSON, 405, "not allowed"),
    ("delete-method", "DELETE", "/healthz", None, JSON, 405, "not allowed"),
]


@pytest.mark.parametrize("name,method,path,body,ctype,status,words", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_requests(servers, name, method, path, body, ctype, status, words):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    if method != "POST" and body is None:
        data = None
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": ctype}
    r = requests.request(method, servers["bt"] + path, data=data, headers=headers, timeout=60)
    assert r.status_code == status, (r.status_code, r.text)
    assert words in r.json()["detail"], r.json()


def test_chunked_body_over_limit(servers):
    """No Content-Length (chunked upload): the size is counted while reading."""
    chunks = iter([b'{"items": [{"prompt": "', b"p" * 5000, b"p" * 5000, b'", "response": "r"}]}'])
    r = requests.post(servers["bt"] + "/v1/score", data=chunks, timeout=60,
                      headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": JSON})
    assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]


def test_still_serving_after_hostile_requests(servers, scorers):
    assert requests.get(servers["bt"] + "/healthz", timeout=30).status_code == 200
    r = _post(servers["bt"] + "/v1/score", _items(PROMPTS, RESPONSES))
    assert r.status_code == 200
    assert r.json()["rewards"] == pytest.approx(scorers["bt"].score(PROMPTS, RESPONSES), abs=1e-4)
