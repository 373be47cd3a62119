"""Serving config (`configs/serve.yaml` + `key=value` overrides, like every other config here)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from actors.backend import BackendConfig
from cluster.config import ClusterConfig

LOOPBACK_NAMES = ("localhost",)
LONG_INPUTS = ("truncate", "refuse")  # serve.long_inputs


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a DNS name or an interface name: treat as reachable from outside


@dataclass
class ServeConfig:
    model_dir: str = ""  # a reward model directory (HF model + tokenizer + w2s_reward.json)
    host: str = "127.0.0.1"  # a non-loopback host (0.0.0.0) needs a token
    port: int = 8000
    # the token clients send (Bearer header, URL user-info password, or ?token=); empty: read
    # $<token_env>; still empty: no auth (loopback hosts only)
    token: str = field(default="", repr=False)
    token_env: str = "W2S_SERVE_TOKEN"
    name: str = "w2s-reward"  # Serve application name
    route_prefix: str = "/"
    replicas: int = 1
    num_cpus: float = 1.0  # per replica
    num_gpus: float = 0.0  # per replica; fractional: a GPU share (0.5: two replicas on one GPU)
    max_ongoing_requests: int = 64  # per replica; must exceed max_batch_size for batches to fill
    access_log: bool = True  # one log line per request from each replica
    # dynamic batching: items (texts or pairs) of concurrent requests are scored in one forward
    batching: bool = True
    max_batch_size: int = 16  # items per batched forward
    batch_wait_timeout_s: float = 0.01
    # request limits
    max_body_bytes: int = 1_000_000
    max_items: int = 64  # items / responses / queries per request
    max_chars: int = 8000  # per string
    max_pairs: int = 256  # judge round-robin pairs per rank request: n responses cost n(n-1)/2
    # /get_reward texts over max_chars or over the model's window (OpenRLHF, veRL): truncate keeps
    # their end (the response) and flags it in extra_logs; refuse answers 422. OpenRLHF turns any
    # failed call into a None reward after 5 tries, so a refusal there is a silently lost sample.
    long_inputs: str = "truncate"  # truncate | refuse
    # slow clients: a request that declares a body must deliver all of it within body_timeout_s
    # (else 408), and at most max_body_readers slow uploads (still arriving after 0.5 s) per replica
    # are read at once (others 503), so stalled uploads cannot take every max_ongoing_requests slot
    body_timeout_s: float = 10.0
    max_body_readers: int = 16
    # model forwards; head and max_length come from the model directory (w2s_reward.json)
    backend: BackendConfig = field(default_factory=lambda: BackendConfig(max_length=512, max_batch_tokens=4096))
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self):
        if not isinstance(self.model_dir, str) or not self.model_dir.strip():
            raise ValueError("model_dir: a reward model directory is needed (model_dir=PATH)")
        if not self.token:
            self.token = os.environ.get(self.token_env, "") if self.token_env else ""
        if not self.host:
            raise ValueError("host: must not be empty")
        if not is_loopback(self.host) and not self.token:
            raise ValueError(f"token: binding to non-loopback host {self.host!r} needs a bearer token "
                             f"(set serve.token or ${self.token_env})")
        if not 0 < self.port < 65536:
            raise ValueError(f"port: must be in 1..65535, got {self.port}")
        if not self.route_prefix.startswith("/"):
            raise ValueError(f"route_prefix: must start with '/', got {self.route_prefix!r}")
        if not self.name:
            raise ValueError("name: must not be empty")
        self._check_resources()
        self._check_limits()

    def _check_resources(self):
        if self.replicas < 1:
            raise ValueError(f"replicas: must be >= 1, got {self.replicas}")
        if self.num_cpus < 0:
            raise ValueError(f"num_cpus: must be >= 0, got {self.num_cpus}")
        gpus = self.num_gpus
        if gpus < 0 or (0 < gpus < 1 and (1 / gpus) != int(1 / gpus)) or (gpus > 1 and gpus != int(gpus)):
            raise ValueError(f"num_gpus: must be 0, 1/n (0.5, 0.25, ...) or a whole number, got {gpus}")
        if self.num_cpus == 0 and gpus == 0:
            raise ValueError("num_cpus: a replica with no GPU needs CPUs (> 0)")

    def _check_limits(self):
        if self.max_ongoing_requests < 1:
            raise ValueError(f"max_ongoing_requests: must be >= 1, got {self.max_ongoing_requests}")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size: must be >= 1, got {self.max_batch_size}")
        if not 0 <= self.batch_wait_timeout_s <= 10:
            raise ValueError(f"batch_wait_timeout_s: must be in [0, 10], got {self.batch_wait_timeout_s}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes: must be >= 1024, got {self.max_body_bytes}")
        if self.max_items < 2:
            raise ValueError(f"max_items: must be >= 2 (rank needs 2 responses), got {self.max_items}")
        if self.max_chars < 1:
            raise ValueError(f"max_chars: must be >= 1, got {self.max_chars}")
        if self.max_pairs < 1:
            raise ValueError(f"max_pairs: must be >= 1, got {self.max_pairs}")
        if self.long_inputs not in LONG_INPUTS:
            raise ValueError(f"long_inputs: must be one of {' | '.join(LONG_INPUTS)}, got {self.long_inputs!r}")
        self._check_slow_clients()

    def _check_slow_clients(self):
        if not 0 < self.body_timeout_s <= 600:
            raise ValueError(f"body_timeout_s: must be in (0, 600] seconds, got {self.body_timeout_s}")
        # readers below the slot count leave slots for /healthz and requests whose body has arrived
        if not 1 <= self.max_body_readers < self.max_ongoing_requests:
            raise ValueError(f"max_body_readers: must be in 1..max_ongoing_requests - 1 "
                             f"(max_ongoing_requests = {self.max_ongoing_requests}), got {self.max_body_readers}")

    def url(self) -> str:
        """Where clients reach the app (a wildcard bind address is reached on loopback)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}{self.route_prefix.rstrip('/')}"
