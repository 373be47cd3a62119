"""configs/serve_deploy.yaml (Serve's own config schema) deployed for real with `serve deploy` on a
`ray start --head` with token auth: 2 RewardServer replicas from the file (ServeConfig's own
`replicas` stays 1), the bearer token of $W2S_SERVE_TOKEN enforced, requests answered by each
replica, then `serve shutdown`.

Which replica answered a scored request: its `x-request-id` (set by Serve's proxy) is looked up
in the replicas' own access logs (logs/serve/replica_<app>_RewardServer_<replica id>.log, one
file per replica); /healthz names the replica that answers it, and must name the same two."""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml

from ray_head import ROOT, SERVE, RayHead, free_ports, run_cli

DEPLOY = ROOT / "configs" / "serve_deploy.yaml"
ITEM = {"items": [{"prompt": "What is 2+2?", "response": "4"}]}


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    from actors.registry import load_model
    from actors.reward_model import save_reward_meta

    path = tmp_path_factory.mktemp("reward") / "bt"
    model, tok = load_model("tiny:llama:7", "classifier", num_labels=1)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    save_reward_meta(path, "bt", max_length=128)
    return str(path)


def test_the_file_is_serve_schema_and_app_builder_takes_its_args(reward_model):
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    from serving.server import app_builder

    raw = yaml.safe_load(DEPLOY.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    app = schema.applications[0]
    assert app.import_path == "serving.server:app_builder"
    assert [d["name"] for d in raw["applications"][0]["deployments"]] == ["RewardServer"]
    assert app.deployments[0].num_replicas == 2
    assert "replicas" not in app.args  # the file's num_replicas is the one count
    assert isinstance(app_builder({**app.args, "model_dir": reward_model, "token": "t"}), serve.Application)


def _replica_of(logs: Path, request_ids: list[str]) -> dict[str, list[str]]:
    """request id -> the replica log files (by replica id) that name it."""
    found = {rid: [] for rid in request_ids}
    for f in sorted(logs.glob("replica_w2s-reward_RewardServer_*.log")):
        text = f.read_text(errors="replace")
        replica = f.stem.rsplit("_", 1)[-1]
        for rid in request_ids:
            if rid in text:
                found[rid].append(replica)
    return found


def _status(head: RayHead) -> dict:
    out = run_cli([SERVE, "status", "-a", head.dashboard], head.client_env(), 60)
    assert out.returncode == 0, out.stderr[-3000:]
    return yaml.safe_load(out.stdout) or {}


def test_serve_deploy_two_replicas_each_answers_then_shutdown(tmp_path, reward_model):
    token = secrets.token_hex(8)
    (port,) = free_ports(1)
    cfg = yaml.safe_load(DEPLOY.read_text())
    cfg["http_options"].update(host="127.0.0.1", port=port)  # this machine: loopback, a free port
    cfg["applications"][0]["args"]["model_dir"] = reward_model
    deploy_file = tmp_path / "serve_deploy.yaml"
    deploy_file.write_text(yaml.safe_dump(cfg))
    url = f"http://127.0.0.1:{port}"

    with RayHead(num_cpus=2, env={"W2S_SERVE_TOKEN": token}) as head:
        out = run_cli([SERVE, "deploy", str(deploy_file), "-a", head.dashboard], head.client_env(), 120)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        deadline, app = time.time() + 200, {}
        while time.time() < deadline:
            app = _status(head).get("applications", {}).get("w2s-reward", {})
            if app.get("status") in ("RUNNING", "DEPLOY_FAILED"):
                break
            time.sleep(2)
        assert app.get("status") == "RUNNING", app
        assert app["deployments"]["RewardServer"]["replica_states"] == {"RUNNING": 2}

        # the token from the head's $W2S_SERVE_TOKEN (host 0.0.0.0 in args needs one) is enforced
        assert requests.get(f"{url}/healthz", timeout=30).json()["status"] == "ok"
        assert requests.post(f"{url}/v1/score", json=ITEM, timeout=30).status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        stats = requests.get(f"{url}/v1/stats", headers=auth, timeout=30).json()
        assert stats["max_batch_size"] == cfg["applications"][0]["args"]["max_batch_size"] and stats["batching"]

        def score(_):
            r = requests.post(f"{url}/v1/score", json=ITEM, headers=auth, timeout=60)
            assert r.status_code == 200, r.text
            return r.headers["x-request-id"], r.json()["rewards"]

        answered: dict[str, list[str]] = {}
        rewards = []
        with ThreadPoolExecutor(8) as pool:
            for _ in range(8):  # concurrent rounds until both replicas have answered (each log flushed)
                for rid, r in pool.map(score, range(8)):
                    answered[rid] = []
                    rewards.append(r)
                time.sleep(1)
                answered = _replica_of(head.logs_dir() / "serve", list(answered))
                if len({reps[0] for reps in answered.values() if reps}) == 2:
                    break
        time.sleep(2)
        answered = _replica_of(head.logs_dir() / "serve", list(answered))
        assert all(len(reps) == 1 for reps in answered.values()), answered  # each request: one replica
        by_replica = {}
        for rid, (rep,) in answered.items():
            by_replica.setdefault(rep, []).append(rid)
        assert len(by_replica) == 2, by_replica  # both replicas answered
        # the same model and dtype behind both (bf16 against fp32 differs by ~1e-2); batches of
        # other sizes may change fp32 summation order in the last bits
        assert all(r == pytest.approx(rewards[0], rel=1e-4, abs=1e-6) for r in rewards), rewards
        # /healthz names the replica that answered: the same two ids as the logs
        with ThreadPoolExecutor(8) as pool:
            seen = set(pool.map(lambda _: requests.get(f"{url}/healthz", timeout=30).json()["replica"], range(48)))
        assert seen == set(by_replica), (seen, set(by_replica))

        out = run_cli([SERVE, "shutdown", "-a", head.dashboard, "-y"], head.client_env(), 120)
        assert out.returncode == 0, out.stderr[-3000:]
        deadline = time.time() + 90
        while time.time() < deadline and _status(head).get("applications"):
            time.sleep(2)
        assert not _status(head).get("applications")
        with pytest.raises(requests.ConnectionError):
            for _ in range(30):  # the proxy goes with Serve
                requests.get(f"{url}/healthz", timeout=5)
                time.sleep(1)
    print({rep: len(rids) for rep, rids in by_replica.items()})
