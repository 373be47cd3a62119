"""A small HTTP client for the W2S reward server (serving/server.py).

    client = RewardClient("http://127.0.0.1:8000", token=os.environ.get("W2S_SERVE_TOKEN"))
    client.score(["2+2?"], ["4"])                  # [reward]
    client.compare("2+2?", "4", "5")               # {"p_first", "p_second", "preferred", "rewards"}
    client.rank("2+2?", ["4", "5", "22"])          # {"scores", "order", "chosen", "rejected"}
    client.get_reward(["2+2? 4"], prompts=["2+2?"])  # OpenRLHF shape: {"rewards", "scores", "extra_logs"}
"""

from __future__ import annotations

import requests


class RewardServerError(RuntimeError):
    """The server answered with an error; `status` is the HTTP status, the message is the server's."""

    def __init__(self, status: int, message: str, path: str):
        super().__init__(f"reward server {path}: HTTP {status}: {message}")
        self.status, self.message = status, message


class RewardClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, payload: dict | None = None) -> dict:
        r = self.session.request(method, self.url + path, json=payload, timeout=self.timeout)
        if r.status_code >= 400:
            try:
                message = r.json().get("detail", r.text)
            except ValueError:
                message = r.text
            raise RewardServerError(r.status_code, str(message), path)
        return r.json()

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
