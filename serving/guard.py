"""The ASGI guard ahead of the reward server's routes (serving/server.py adds it): the token, then
the body, read under a deadline, with a bounded number of slow uploads at once.

Not run on its own; `tests/test_serve_hardening.py` drives it through a real Ray Serve app:

    .venv/bin/python -m pytest -q tests/test_serve_hardening.py

Tokens are accepted where clients that cannot set headers put them (OpenRLHF posts to the URL it
is given, verbatim): `Authorization: Bearer <token>`, the URL's user-info (`http://user:<token>@host`
arrives as `Authorization: Basic base64(user:<token>)`; `http://<token>@host` as the user with no
password) and a `?token=<token>` query parameter. The query parameter is removed from the request
before routing, so no route, error message or log line downstream can repeat it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
from urllib.parse import parse_qsl, urlencode

from starlette.responses import JSONResponse

OPEN_PATHS = ("/healthz",)  # answered without a token: load balancers probe it
# A body still arriving after this is a slow upload and needs a serve.max_body_readers slot.
# Ordinary bodies arrive in milliseconds (a burst of them needs no slot); a stalled upload
# without a slot gives its replica slot back after this long.
SLOW_AFTER_S = 0.5
UNAUTHORIZED = ("missing or invalid bearer token (send Authorization: Bearer <token>, or put it in the URL: "
                "http://user:<token>@host:port/... or ?token=<token>)")


def error(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def rel_path(scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] or "/" if root and path.startswith(root) else path


class Guard:
    """ASGI middleware: token check (constant time), then the body, bounded by serve.max_body_bytes,
    read within serve.body_timeout_s by at most serve.max_body_readers requests, replayed to the app.

    `state()` returns the replica's (cfg, body_readers semaphore); a callable, because the replica
    object exists only once Serve has built it."""

    def __init__(self, app, state):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cfg, readers = self.state()
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        query, query_tokens = pop_token(scope.get("query_string", b""))
        scope = {**scope, "query_string": query}
        if cfg.token and rel_path(scope) not in OPEN_PATHS and not authorized(headers, query_tokens, cfg.token):
            return await error(401, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        body, failure = await read_body(headers, receive, cfg, readers)
        if failure:
            return await error(*failure)(scope, receive, send)
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive):
    done = False

    async def replay():
        nonlocal done
        if done:
            return await receive()  # after the body: the disconnect, when it comes
        done = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


# ---------------------------------------------------------------- tokens

def pop_token(query_string: bytes) -> tuple[bytes, list[str]]:
    """(the query string without `token`, the token values it held)."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    tokens = [v for k, v in pairs if k == "token"]
    if not tokens:
        return query_string, []
    return urlencode([(k, v) for k, v in pairs if k != "token"]).encode("latin-1"), tokens


def authorized(headers: dict, query_tokens: list[str], token: str) -> bool:
    want, matched = token.encode(), False
    for given in _offered(headers, query_tokens):  # no early exit: timing tells nothing about which matched
        matched |= hmac.compare_digest(given, want)
    return matched


def _offered(headers: dict, query_tokens: list[str]) -> list[bytes]:
    scheme, _, value = headers.get("authorization", b"").decode("latin-1").partition(" ")
    offered = [t.encode() for t in query_tokens]
    if scheme.lower() == "bearer":
        offered.append(value.strip().encode("latin-1"))
    elif scheme.lower() == "basic":
        offered += _basic_credentials(value.strip())
    return offered


def _basic_credentials(value: str) -> list[bytes]:
    """The token from Basic user:password: the password, or the user when there is no password."""
    try:
        user, _, password = base64.b64decode(value, validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return []
    return [password] if password else [user]


# ---------------------------------------------------------------- the body

async def read_body(headers: dict, receive, cfg, readers: asyncio.Semaphore) -> tuple[bytes, tuple | None]:
    """(body, None) or (b"", (status, detail[, headers])).

    A body that arrives within SLOW_AFTER_S needs nothing more. A slower one takes one of the
    serve.max_body_readers slots (none free: 503) and must be complete by serve.body_timeout_s
    (else 408). So stalled uploads hold at most max_body_readers replica slots for long; the
    others are answered within SLOW_AFTER_S, and /healthz and ordinary requests keep going."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            return b"", (400, "content-length: not a number")
        if int(declared) > cfg.max_body_bytes:
            return b"", _too_large(cfg.max_body_bytes)
    body = _Body(receive, cfg.max_body_bytes)
    deadline = asyncio.get_running_loop().time() + cfg.body_timeout_s
    try:
        async with asyncio.timeout(min(SLOW_AFTER_S, cfg.body_timeout_s)):
            return await body.read()
    except TimeoutError:
        pass  # slow: `body` keeps what has arrived
    if readers.locked():
        busy = f"busy: serve.max_body_readers = {cfg.max_body_readers} slow uploads are already being read; retry"
        return b"", (503, busy, {"Retry-After": "1", "Connection": "close"})
    async with readers:
        try:
            async with asyncio.timeout_at(deadline):
                return await body.read()
        except TimeoutError:
            # Connection: close, so the proxy drops the connection instead of waiting for the rest
            return b"", (408, f"body: not received within serve.body_timeout_s = {cfg.body_timeout_s} s",
                         {"Connection": "close"})


class _Body:
    """The body read so far; a read cut off by a timeout is resumed by the next read()."""

    def __init__(self, receive, limit: int):
        self.receive, self.limit = receive, limit
        self.data, self.more = bytearray(), True

    async def read(self) -> tuple[bytes, tuple | None]:
        while self.more:
            message = await self.receive()  # cancel-safe: Serve's receive is a queue get
            if message["type"] == "http.disconnect":
                return b"", (400, "client disconnected")
            self.data += message.get("body", b"")
            self.more = message.get("more_body", False)
            if len(self.data) > self.limit:
                return b"", _too_large(self.limit)
        return bytes(self.data), None


def _too_large(limit: int) -> tuple[int, str]:
    return 413, f"body: larger than serve.max_body_bytes = {limit} bytes"
