"""Long /get_reward samples, scored the way reward models score them: cut from the left to the
model's window so the response (the end of the text) is kept, and counted so the reply can say so.

Not run on its own; `tests/test_serve_hardening.py` covers it through the real server:

    .venv/bin/python -m pytest -q tests/test_serve_hardening.py

Two cuts, both from the left: first to serve.max_chars characters (bounds the tokenizer's work on
a hostile body), then the backend's own cut to the model's max_length tokens. `WindowCounter`
counts the tokens the second cut drops, with the tokenizer the backend uses.
"""

from __future__ import annotations

import asyncio
import copy
import sys
from concurrent.futures import ThreadPoolExecutor

from actors.backend import encode_prompts


def keep_end(prompt: str, response: str, limit: int) -> tuple[str, str, int]:
    """(prompt, response, characters dropped) with at most `limit` characters in all, cut from the
    start: the prompt goes first, then the start of the response."""
    over = len(prompt) + len(response) - limit
    if over <= 0:
        return prompt, response, 0
    if len(response) >= limit:
        return "", response[len(response) - limit:], over
    return prompt[over:], response, over


class WindowCounter:
    """Tokens past a bt model's window per (prompt, response), as the backend would cut them.

    Its own tokenizer copy on its own thread: a fast tokenizer used from two threads at once (this
    and the forward) can fail with "Already borrowed"; one thread keeps the event loop free."""

    def __init__(self, scorer):
        self.scorer = scorer
        self.tok = copy.deepcopy(scorer.backend.tok)
        self.window: int = scorer.backend.cfg.max_length
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="w2s-window")

    def _count(self, texts: list[str]) -> list[int]:
        ids = encode_prompts(self.tok, texts, self.scorer.meta.get("chat", False), sys.maxsize)
        return [max(0, len(x) - self.window) for x in ids]

    async def overflow(self, prompts: list[str], responses: list[str]) -> list[int]:
        texts = [self.scorer.text(p, r) for p, r in zip(prompts, responses)]
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._count, texts)


def extra_logs(rewards: list[float], chars: list[int], tokens: list[int]) -> dict[str, list[float]]:
    """OpenRLHF's extra_logs (one number per query; it logs their mean): the reward and what was cut."""
    return {"w2s_reward": rewards, "w2s_truncated": [float(c > 0 or t > 0) for c, t in zip(chars, tokens)],
            "w2s_dropped_chars": [float(c) for c in chars], "w2s_dropped_tokens": [float(t) for t in tokens]}
