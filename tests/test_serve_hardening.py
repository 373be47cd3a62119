"""serving/: what RL trainers and hostile networks do to the reward server, over real Ray Serve HTTP.

    .venv/bin/python -m pytest -q tests/test_serve_hardening.py

One module-scoped Serve instance holds two apps of the tiny bt reward model (test_serving.py's
fixtures) on one free port: "/" with a token and long_inputs=truncate, and "/strict" with no token,
long_inputs=refuse, 8 request slots, 2 slow-upload slots and a 3 s body deadline. A TCP hop in
front of the real server fails the first calls on purpose to exercise the clients' retries.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from test_serving import FP32, _free_port, model_dirs  # noqa: F401  (model_dirs: a fixture used here)

TOKEN = "hard-tok-3b7e19c4"  # distinctive: the log check searches every Ray log for it
WRONG = "wrong-tok-a81f02"
MAX_CHARS, WINDOW = 400, 128  # serve.max_chars here; the tiny model's max_length (test_serving._save)
BODY_TIMEOUT_S, SLOTS, SLOW_SLOTS = 3.0, 8, 2  # the /strict app
PROMPT = "Count to a hundred:"
DIGITS = "1 2 3 4 5 6 7 8 9 0 " * 15  # 300 characters, 300 tokens: under max_chars, over the window


@pytest.fixture(scope="module")
def bt_scorer(model_dirs):  # noqa: F811
    from actors.reward_model import RewardScorer

    return RewardScorer.from_dir(model_dirs["bt"], FP32)


@pytest.fixture(scope="module")
def apps(ray_cluster, model_dirs):  # noqa: F811
    from ray import serve

    from serving.config import ServeConfig
    from serving.server import serve_reward

    port = _free_port()
    common = {"model_dir": model_dirs["bt"], "port": port, "num_cpus": 0.25, "backend": FP32, "max_items": 8,
              "max_chars": MAX_CHARS, "max_body_bytes": 16384}
    main = ServeConfig(name="w2s-hard-main", route_prefix="/", token=TOKEN, **common)
    strict = ServeConfig(name="w2s-hard-strict", route_prefix="/strict", token="", token_env="",
                         long_inputs="refuse", max_ongoing_requests=SLOTS, max_body_readers=SLOW_SLOTS,
                         body_timeout_s=BODY_TIMEOUT_S, **common)
    yield {"main": serve_reward(main), "strict": serve_reward(strict), "port": port}
    serve.shutdown()


def _with_userinfo(url: str, userinfo: str) -> str:
    return url.replace("http://", f"http://{userinfo}@", 1)


def _body(prompts, responses) -> dict:
    return {"query": [p + r for p, r in zip(prompts, responses)], "prompts": list(prompts)}


async def _openrlhf_post(url: str, data: dict) -> dict:
    """OpenRLHF's own call (openrlhf/utils/agent.py, _fetch_rewards_via_http): the URL verbatim, JSON,
    no headers of its own; aiohttp turns user-info in the URL into Basic auth."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180)) as session, \
            session.post(url, json=data) as response:
        response.raise_for_status()
        return await response.json()


# ------------------------------------------------------------------ the token in the URL

def test_token_in_url_is_accepted(apps, bt_scorer):
    body = _body(["What is 2+2?"], ["4"])
    expected = bt_scorer.score(["What is 2+2?"], ["4"])
    userinfo = _with_userinfo(apps["main"], f"openrlhf:{TOKEN}") + "/get_reward"  # password = token
    for url in (userinfo, apps["main"] + f"/get_reward?token={TOKEN}", apps["main"] + f"/get_reward?a=1&token={TOKEN}"):
        r = requests.post(url, json=body, timeout=60)
        assert r.status_code == 200, (url, r.text)
        assert r.json()["rewards"] == pytest.approx(expected, abs=1e-4)
    # OpenRLHF's aiohttp call; aiohttp also sends a bare user (http://TOKEN@host) as Basic "TOKEN:"
    for url in (userinfo, _with_userinfo(apps["main"], TOKEN) + "/get_reward"):
        out = asyncio.run(_openrlhf_post(url, {**body, "labels": [None]}))
        assert out["rewards"] == pytest.approx(expected, abs=1e-4)
    bearer = requests.post(apps["main"] + "/get_reward", json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                           timeout=60)
    assert bearer.status_code == 200


def test_wrong_token_in_url_is_refused(apps):
    import aiohttp

    body = _body(["p"], ["r"])
    urls = [_with_userinfo(apps["main"], f"openrlhf:{WRONG}") + "/get_reward",
            _with_userinfo(apps["main"], f"{TOKEN}x") + "/get_reward",
            _with_userinfo(apps["main"], f"{TOKEN}:{WRONG}") + "/get_reward?token=",  # the password counts
            apps["main"] + f"/get_reward?token={WRONG}",
            apps["main"] + f"/get_reward?tok={TOKEN}",
            apps["main"] + "/get_reward"]
    for url in urls:
        r = requests.post(url, json=body, timeout=60)
        assert r.status_code == 401, (url, r.text)
        assert WRONG not in r.text and TOKEN not in r.text and "?token=" in r.json()["detail"]
    with pytest.raises(aiohttp.ClientResponseError) as e:
        asyncio.run(_openrlhf_post(urls[0], body))
    assert e.value.status == 401
    # the open path stays open, and a token in its query string is not echoed either
    health = requests.get(apps["main"] + f"/healthz?token={WRONG}", timeout=30)
    assert health.status_code == 200 and WRONG not in health.text


def test_token_never_in_logs(apps, ray_cluster):
    import ray

    for token in (TOKEN, WRONG):  # accepted and refused, in the query string and in the user-info
        requests.post(apps["main"] + f"/get_reward?token={token}", json=_body(["p"], ["r"]), timeout=60)
        requests.post(_with_userinfo(apps["main"], f"u:{token}") + "/get_reward", json=_body(["p"], ["r"]),
                      timeout=60)
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    deadline = time.monotonic() + 30
    while "/get_reward" not in _read_all(logs / "serve") and time.monotonic() < deadline:
        time.sleep(0.5)  # access log lines reach the files a little after the answers
    text = _read_all(logs)
    assert "/get_reward" in text, "no access log line found: the check below would prove nothing"
    assert TOKEN not in text and WRONG not in text


def _read_all(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------ long samples

def test_long_samples_are_truncated_and_flagged(apps, bt_scorer):
    from serving.long_inputs import keep_end

    long_response = "x" * 1000  # query over max_chars
    prompts, responses = [PROMPT, PROMPT, "What is 2+2?"], [long_response, DIGITS, "4"]
    r = requests.post(apps["main"] + "/get_reward", json=_body(prompts, responses), timeout=60,
                      headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    out = r.json()
    kept = keep_end(PROMPT, long_response, MAX_CHARS)
    assert kept[:2] == ("", long_response[-MAX_CHARS:])  # the end of the text: the response's end
    expected = bt_scorer.score([kept[0], PROMPT, prompts[2]], [kept[1], DIGITS, "4"])
    assert out["rewards"] == pytest.approx(expected, abs=1e-4) and out["scores"] == out["rewards"]
    logs = out["extra_logs"]
    assert logs["w2s_truncated"] == [1.0, 1.0, 0.0]
    assert logs["w2s_dropped_chars"] == [len(PROMPT) + 1000 - MAX_CHARS, 0.0, 0.0]
    digits_tokens = len(bt_scorer.backend.tok(bt_scorer.text(PROMPT, DIGITS))["input_ids"])
    assert digits_tokens > WINDOW and logs["w2s_dropped_tokens"] == [0.0, digits_tokens - WINDOW, 0.0]
    assert logs["w2s_reward"] == out["rewards"]


def test_long_samples_are_refused_under_refuse(apps):
    over_chars = requests.post(apps["strict"] + "/get_reward", json=_body([PROMPT], ["x" * 1000]), timeout=60)
    assert over_chars.status_code == 422 and "serve.max_chars" in over_chars.json()["detail"]
    over_window = requests.post(apps["strict"] + "/get_reward", json=_body([PROMPT], [DIGITS]), timeout=60)
    assert over_window.status_code == 422, over_window.text
    assert "serve.long_inputs = refuse" in over_window.json()["detail"]
    short = requests.post(apps["strict"] + "/get_reward", json=_body([PROMPT], ["1 2 3"]), timeout=60)
    assert short.status_code == 200 and short.json()["extra_logs"]["w2s_truncated"] == [0.0]


def test_long_inputs_config_is_validated():
    from serving.config import ServeConfig

    with pytest.raises(ValueError, match="^long_inputs: "):
        ServeConfig(model_dir="m", long_inputs="cut")
    with pytest.raises(ValueError, match="^body_timeout_s: "):
        ServeConfig(model_dir="m", body_timeout_s=0.0)
    with pytest.raises(ValueError, match="^max_body_readers: "):
        ServeConfig(model_dir="m", max_ongoing_requests=8, max_body_readers=8)


# ------------------------------------------------------------------ veRL and the client's retries

def test_verl_reward_function(apps, bt_scorer, monkeypatch):
    from serving import verl_reward

    prompts = ["What is 2+2?", "Name a colour.", "Say hi.", "Count:", "Translate 'chat'."]
    responses = ["4", "Blue.", "hi", "1 2 3", "cat"]
    infos = [{"prompt": prompts[0]}, {"question": prompts[1]}, {"prompt": [{"role": "user", "content": prompts[2]}]},
             {"prompt": prompts[3], "question": "not this"}, {"prompt": prompts[4]}]
    expected = bt_scorer.score(prompts, responses)
    got = verl_reward.compute_score_batch(["src"] * 5, responses, [None] * 5, infos, url=apps["main"], token=TOKEN,
                                          batch_size=2)
    assert got == pytest.approx(expected, abs=1e-4)
    monkeypatch.setenv(verl_reward.URL_ENV, _with_userinfo(apps["main"], f"verl:{TOKEN}"))
    monkeypatch.delenv(verl_reward.TOKEN_ENV, raising=False)
    one = verl_reward.compute_score("src", responses[0], "4", {"prompt": prompts[0]})
    assert isinstance(one, float) and one == pytest.approx(expected[0], abs=1e-4)
    monkeypatch.delenv(verl_reward.URL_ENV)
    with pytest.raises(ValueError, match="^custom_reward_function.reward_kwargs.url: "):
        verl_reward.compute_score("src", "4", None, {})
    with pytest.raises(ValueError, match="^custom_reward_function.reward_kwargs.prompt_key: "):
        verl_reward.compute_score("src", "4", None, {"q": "x"}, url=apps["main"], prompt_key="question")


CANNED = {"503": b"503 Service Unavailable", "401": b"401 Unauthorized"}  # Flaky's scripted answers


class Flaky:
    """A TCP hop in front of the real server: the first connections get the scripted failure
    ("503", "401": a canned answer; "reset": closed without an answer; "hang": never answered),
    later ones are forwarded byte for byte."""

    def __init__(self, target_port: int, script: list[str]):
        self.target, self.script, self.connections = target_port, list(script), 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            action = self.script.pop(0) if self.script else "forward"
            threading.Thread(target=self._handle, args=(conn, action), daemon=True).start()

    def _handle(self, conn, action):
        if action == "forward":
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=_pump, args=(upstream, conn), daemon=True).start()
            return _pump(conn, upstream)
        _read_request(conn)
        if action == "hang":
            return time.sleep(60)
        if action in CANNED:
            detail = b'{"detail": "scripted failure"}'
            conn.sendall(b"HTTP/1.1 " + CANNED[action] + b"\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\nContent-Length: " + str(len(detail)).encode() + b"\r\n\r\n" + detail)
        conn.close()

    def close(self):
        self.listener.close()


def _read_request(conn) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
    while len(body) < length:
        body += conn.recv(65536)


def _pump(src, dst):
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def test_client_and_verl_retry_a_failing_server(apps, bt_scorer):
    from serving import verl_reward
    from serving.client import RewardClient, RewardServerError

    expected = bt_scorer.score(["What is 2+2?"], ["4"])
    flaky = Flaky(apps["port"], ["503", "reset"])  # two failed calls, then the real server
    try:
        got = verl_reward.compute_score("src", "4", None, {"prompt": "What is 2+2?"}, url=flaky.url, token=TOKEN,
                                        backoff_s=0.05)
        assert got == pytest.approx(expected[0], abs=1e-4) and flaky.connections == 3
    finally:
        flaky.close()
    refused = Flaky(apps["port"], ["401"])  # the caller's mistake: not retried
    try:
        with pytest.raises(RewardServerError) as e:
            RewardClient(refused.url, TOKEN, backoff_s=0.05).score(["p"], ["r"])
        assert e.value.status == 401 and refused.connections == 1
    finally:
        refused.close()


def test_client_times_out_and_gives_up(apps):
    from serving.client import RewardClient, RewardServerError

    silent = Flaky(apps["port"], ["hang", "hang"])
    try:
        client = RewardClient(silent.url, TOKEN, timeout=0.5, retries=1, backoff_s=0.05)
        t = time.monotonic()
        with pytest.raises(RewardServerError, match="2 tries") as e:
            client.get_reward(["p r"], prompts=["p"])
        assert e.value.status is None and silent.connections == 2 and time.monotonic() - t < 5
    finally:
        silent.close()


# ------------------------------------------------------------------ stalled uploads

def _stall(port: int, path: str) -> socket.socket:
    """A client that declares a 1000-byte body and sends one byte of it."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              "Content-Length: 1000\r\n\r\n{".encode())
    return s


def _answer(s: socket.socket, deadline: float) -> str:
    """The HTTP status the server sent, "closed" (no answer, connection closed) or "silent"."""
    data = b""
    try:
        while b"\r\n" not in data:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = s.recv(4096)
            if not chunk:
                return "closed" if not data else data.split()[1].decode()
            data += chunk
    except (TimeoutError, ConnectionResetError):
        return "silent" if not data else data.split()[1].decode()
    finally:
        s.close()
    return data.split()[1].decode()


def test_stalled_uploads_do_not_freeze_the_server(apps, bt_scorer):
    start = time.monotonic()
    stalled = [_stall(apps["port"], "/strict/v1/score") for _ in range(SLOTS + 4)]  # more than the slots
    time.sleep(0.2)  # they reach the replica first
    t = time.monotonic()
    health = requests.get(apps["strict"] + "/healthz", timeout=30)
    health_s = time.monotonic() - t
    assert health.status_code == 200 and health_s < BODY_TIMEOUT_S, health_s
    ordinary = requests.post(apps["strict"] + "/v1/score", json={"items": [{"prompt": "p", "response": "r"}]},
                             timeout=30)
    assert ordinary.status_code == 200 and ordinary.json()["rewards"] == pytest.approx(
        bt_scorer.score(["p"], ["r"]), abs=1e-4)
    answers = [_answer(s, start + BODY_TIMEOUT_S + 5) for s in stalled]
    assert set(answers) <= {"408", "503", "closed"}, answers
    assert 1 <= answers.count("408") <= SLOW_SLOTS, answers  # the slow-upload slots, at the deadline
    assert time.monotonic() - start < BODY_TIMEOUT_S + 5
    assert requests.get(apps["strict"] + "/healthz", timeout=30).status_code == 200
