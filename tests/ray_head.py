"""A private `ray start --head` for tests that drive the Ray CLIs (`ray job submit`, `serve deploy`).

Started with the venv's `ray` (so the venv's python and `w2s` are on the cluster's PATH), Ray
2.60's token auth on (`RAY_AUTH_MODE=token`, the token in `RAY_AUTH_TOKEN`: nothing is written to
~/.ray), free ports and a short private --temp-dir. `stop()` ends only what this head started: the
process group of `ray start --block` (SIGTERM, then SIGKILL), then any process left whose command
line names this head's temp dir. Never `ray stop`: other clusters run on the same machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: ray, serve, w2s, python
RAY, SERVE = str(BIN / "ray"), str(BIN / "serve")


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports (all sockets held open while picking)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class RayHead:
    def __init__(self, num_cpus: int = 2, num_gpus: int = 0, env: dict | None = None):
        self.num_cpus, self.num_gpus, self.extra_env = num_cpus, num_gpus, dict(env or {})
        self.token = secrets.token_hex(16)
        self.proc: subprocess.Popen | None = None
        self.temp_dir = ""
        self.failures: list[str] = []

    # -- environments

    def _base_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "W2S_SERVE_TOKEN"))}
        env.update({"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
                    "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0"})
        return env

    def client_env(self, token: str | None = None) -> dict:
        """The env of a CLI client of this head: token auth on, with this head's token (or `token`)."""
        return {**self._base_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token or self.token}

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    # -- start / stop

    def start(self, attempts: int = 3) -> "RayHead":
        """Start the head; a try that fails (on a loaded box `ray start` gives the raylet a fixed
        30 s to register: ray/_private/node.py) is cleaned up and retried on fresh ports."""
        for attempt in range(attempts):
            try:
                return self._start_once()
            except RuntimeError as e:
                self.failures.append(str(e)[-1500:])
                self.stop()
                if attempt == attempts - 1:
                    raise

    def _start_once(self) -> "RayHead":
        (self.port, self.dashboard_port, self.client_port, self.node_manager_port, self.object_manager_port,
         self.metrics_port, self.agent_listen_port, self.agent_grpc_port, self.runtime_env_port) = free_ports(9)
        # unix socket paths live under it: keep it short (Ray's limit is ~107 characters)
        self.temp_dir = tempfile.mkdtemp(prefix="r", dir="/tmp")
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.gcs = f"127.0.0.1:{self.port}"
        cmd = [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
               "--port", str(self.port), "--ray-client-server-port", str(self.client_port),
               "--node-manager-port", str(self.node_manager_port),
               "--object-manager-port", str(self.object_manager_port),
               "--metrics-export-port", str(self.metrics_port),
               "--dashboard-agent-listen-port", str(self.agent_listen_port),
               "--dashboard-agent-grpc-port", str(self.agent_grpc_port),
               "--runtime-env-agent-port", str(self.runtime_env_port),
               "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
               "--dashboard-port", str(self.dashboard_port),
               "--num-cpus", str(self.num_cpus), "--num-gpus", str(self.num_gpus),
               "--object-store-memory", str(256 * 1024**2),
               "--temp-dir", self.temp_dir, "--disable-usage-stats"]
        self.log_path = Path(self.temp_dir) / "ray_start.log"
        env = {**self.client_env(), **self.extra_env}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self._wait_ready(timeout=240)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                # `ray start` done (raylet registered) and the dashboard's job module answering
                if ("Ray runtime started" in self.log_tail(100_000)
                        and requests.get(f"{self.dashboard}/api/jobs/", headers=self.auth, timeout=5).status_code == 200):
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        raise RuntimeError(f"the dashboard at {self.dashboard} did not come up in {timeout:g}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def logs_dir(self) -> Path:
        return Path(self.temp_dir) / "session_latest" / "logs"

    def stop(self) -> None:
        if self.proc is not None:
            # SIGTERM: the raylet and workers exit within seconds; gcs_server and `ray start --block`
            # itself linger on it (seen: > 30 s), hence SIGKILL after a short grace
            pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    continue
                if not _group_alive(pgid):
                    break
            self.proc = None
        if self.temp_dir:
            _kill_named(self.temp_dir)  # workers that left the process group, if any
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = ""

    def __enter__(self) -> "RayHead":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _pids_naming(path: str) -> list[int]:
    """Processes with an argument that is `path` or lies under it (`--temp-dir=/tmp/rx/...`)."""
    pids, under = [], (path.rstrip("/") + "/").encode()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            args = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(path.encode()) or under in a for a in args):
            pids.append(int(p.name))
    return pids


def _kill_named(text: str) -> None:
    """SIGKILL the processes whose command line holds `text` (this head's unique temp dir)."""
    for _ in range(3):
        pids = _pids_naming(text)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(1)


def run_cli(cmd: list[str], env: dict, timeout: float, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
