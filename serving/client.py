"""A small HTTP client for the W2S reward server (serving/server.py), with timeouts and retries.

    client = RewardClient("http://127.0.0.1:8000", token=os.environ.get("W2S_SERVE_TOKEN"))
    client.score(["2+2?"], ["4"])                  # [reward]
    client.compare("2+2?", "4", "5")               # {"p_first", "p_second", "preferred", "rewards"}
    client.rank("2+2?", ["4", "5", "22"])          # {"scores", "order", "chosen", "rejected"}
    client.get_reward(["2+2? 4"], prompts=["2+2?"])  # OpenRLHF shape: {"rewards", "scores", "extra_logs"}

A call that gets no answer (connection refused or reset, a timeout) or a transient status (408,
429, 5xx) is retried `retries` times, waiting backoff_s, 2 backoff_s, 4 backoff_s ... (at most
max_backoff_s; a Retry-After header is honoured up to that cap). Scoring has no side effects, so
POSTs are retried too. Other 4xx are the caller's mistake and raise at once.
"""

from __future__ import annotations

import time

import requests

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class RewardServerError(RuntimeError):
    """The server answered with an error (`status` is the HTTP status, the message is the server's),
    or never answered after every retry (`status` None)."""

    def __init__(self, status: int | None, message: str, path: str):
        what = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"reward server {path}: {what}: {message}")
        self.status, self.message = status, message


class RewardClient:
    """timeout: seconds, or (connect, read) seconds, per try. A token may also sit in the URL
    (http://user:TOKEN@host), which requests sends as Basic auth."""

    def __init__(self, url: str, token: str | None = None, timeout: float | tuple[float, float] = (5.0, 60.0),
                 retries: int = 3, backoff_s: float = 0.5, max_backoff_s: float = 8.0):
        if retries < 0:
            raise ValueError(f"retries: must be >= 0, got {retries}")
        if backoff_s < 0 or max_backoff_s < backoff_s:
            raise ValueError(f"backoff_s: must be in [0, max_backoff_s = {max_backoff_s}], got {backoff_s}")
        self.url = url.rstrip("/")
        self.timeout, self.retries = timeout, retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, payload: dict | None = None) -> dict:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                r = self.session.request(method, self.url + path, json=payload, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as e:
                if last:
                    raise RewardServerError(None, f"{self.retries + 1} tries, last: {type(e).__name__}: {e}",
                                            path) from e
                self._wait(attempt, None)
                continue
            if r.status_code in RETRY_STATUS and not last:
                self._wait(attempt, r.headers.get("Retry-After"))
                continue
            return _result(r, path)
        raise AssertionError("unreachable: the last try returns or raises")

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
        if retry_after and retry_after.isdigit():  # the server knows better, within our cap
            delay = min(self.max_backoff_s, max(delay, float(retry_after)))
        time.sleep(delay)

    def health(self) -> dict:
        return self._call("GET", "/healthz")

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"score: {len(prompts)} prompts for {len(responses)} responses")
        items = [{"prompt": p, "response": r} for p, r in zip(prompts, responses)]
        return self._call("POST", "/v1/score", {"items": items})["rewards"]

    def compare(self, prompt: str, a: str, b: str) -> dict:
        return self._call("POST", "/v1/compare", {"prompt": prompt, "responses": [a, b]})

    def rank(self, prompt: str, responses: list[str]) -> dict:
        return self._call("POST", "/v1/rank", {"prompt": prompt, "responses": list(responses)})

    def get_reward(self, query: list[str], prompts: list[str] | None = None, labels: list | None = None) -> dict:
        payload: dict = {"query": list(query)}
        if prompts is not None:
            payload["prompts"] = list(prompts)
        if labels is not None:
            payload["labels"] = list(labels)
        return self._call("POST", "/get_reward", payload)


def _result(r: requests.Response, path: str) -> dict:
    if r.status_code >= 400:
        try:
            message = r.json().get("detail", r.text)
        except ValueError:
            message = r.text
        raise RewardServerError(r.status_code, str(message), path)
    return r.json()
