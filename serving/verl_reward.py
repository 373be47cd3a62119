"""veRL custom reward function backed by the W2S reward server (serving/server.py, /get_reward).

veRL loads this file by path (docs: custom_reward_function.path / .name; reward_kwargs are passed
to the function as keyword arguments):

    python -m verl.trainer.main_ppo ... \\
        custom_reward_function.path=/path/to/w2s/serving/verl_reward.py \\
        custom_reward_function.name=compute_score \\
        +custom_reward_function.reward_kwargs.url=http://rm-host:8000
    # batched, one HTTP call per `batch_size` samples (recommended):
    #   reward_model.reward_manager=batch custom_reward_function.name=compute_score_batch

The token: reward_kwargs.token, $W2S_SERVE_TOKEN, or in the URL (http://user:TOKEN@rm-host:8000).
The URL: reward_kwargs.url or $W2S_REWARD_URL. The prompt comes from the sample's extra_info
(`prompt_key`, default: "prompt", else "question", the key veRL's example preprocessors write);
without one the response is scored alone. Try it against a running server:

    W2S_REWARD_URL=http://127.0.0.1:8000 .venv/bin/python serving/verl_reward.py "2+2?" "4"
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

try:
    from serving.client import RewardClient
except ImportError:  # veRL imports this file by path, outside the repo: make `serving` importable
    sys.path.append(str(Path(__file__).resolve().parents[1]))
    from serving.client import RewardClient

URL_ENV, TOKEN_ENV = "W2S_REWARD_URL", "W2S_SERVE_TOKEN"
PROMPT_KEYS = ("prompt", "question")  # looked up in extra_info when prompt_key is not given
_clients: dict[tuple, RewardClient] = {}  # one keep-alive session per server and settings


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """veRL's per-sample signature (naive reward manager): the reward of one response."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **kwargs)[0]


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos, *, url: str | None = None,
                        token: str | None = None, prompt_key: str | None = None, batch_size: int = 64,
                        timeout: float = 60.0, retries: int = 4, backoff_s: float = 1.0, **_ignored) -> list[float]:
    """veRL's batch signature (reward_model.reward_manager=batch): one reward per response, in
    calls of at most `batch_size` samples (keep it <= serve.max_items). data_sources and
    ground_truths are accepted and unused: a reward model scores the text alone."""
    if batch_size < 1:
        raise ValueError(f"custom_reward_function.reward_kwargs.batch_size: must be >= 1, got {batch_size}")
    client = _client(url, token, timeout, retries, backoff_s)
    infos = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
    prompts = [_prompt(info, prompt_key) for info in infos]
    rewards: list[float] = []
    for i in range(0, len(solution_strs), batch_size):
        p, r = prompts[i:i + batch_size], list(solution_strs[i:i + batch_size])
        rewards += client.get_reward([a + b for a, b in zip(p, r)], prompts=p)["rewards"]
    return rewards


def _client(url, token, timeout, retries, backoff_s) -> RewardClient:
    url = url or os.environ.get(URL_ENV)
    if not url:
        raise ValueError(f"custom_reward_function.reward_kwargs.url: the reward server's URL is needed "
                         f"(+custom_reward_function.reward_kwargs.url=http://host:8000, or ${URL_ENV})")
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    key = (url, token, timeout, retries, backoff_s)
    if key not in _clients:
        _clients[key] = RewardClient(url, token, timeout=(min(10.0, timeout), timeout), retries=retries,
                                     backoff_s=backoff_s, max_backoff_s=max(backoff_s, 16.0))
    return _clients[key]


def _prompt(info, prompt_key: str | None) -> str:
    info = info if isinstance(info, dict) else {}
    if prompt_key is not None:
        if prompt_key not in info:
            raise ValueError(f"custom_reward_function.reward_kwargs.prompt_key: extra_info has no {prompt_key!r} "
                             f"(it has {sorted(info)})")
        return _text(info[prompt_key])
    return next((_text(info[k]) for k in PROMPT_KEYS if k in info), "")


def _text(value) -> str:
    """A prompt as text: chat messages ([{"role", "content"}, ...]) joined by newlines."""
    if isinstance(value, str):
        return value
    value = value.tolist() if hasattr(value, "tolist") else value  # veRL's non-tensor batch: numpy arrays
    if isinstance(value, (list, tuple)):
        return "\n".join(m.get("content", "") if isinstance(m, dict) else str(m) for m in value)
    return str(value)


if __name__ == "__main__":
    print(compute_score("cli", sys.argv[2], None, {"prompt": sys.argv[1]}))
