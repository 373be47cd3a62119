"""The cluster path of README "On a GPU cluster", for real: `ray start --head` with Ray 2.60's token
auth, a client without the token refused, then `ray job submit --working-dir . -- w2s run
configs/tiny.yaml ...` running on that head's resources (2 CPUs, 2 logical GPUs) to SUCCEEDED, and
its metrics.json / report.md on disk."""

from __future__ import annotations

import json
import time
import uuid

import requests

from ray_head import RAY, ROOT, RayHead, run_cli

# quick: one weak model, no weak fine-tuning, vote labels, one W2S method, fewer rows
OVERRIDES = ["weak.models=[{spec: 'tiny:llama:1', name: tiny_a, backend: {dtype: float32, max_length: 128}}]",
             "weak.finetune=false", "annotate.method=ensemble", "strong.methods=[naive]", "strong.bootstrap=[]",
             "data.weak_train=0", "data.held_out=16", "data.test=8"]
EXCLUDES = [".venv", "runs", ".git", "**/__pycache__", ".pytest_cache", "docs", "benchmarks/results"]


def test_token_auth_refuses_a_client_without_the_token_and_a_job_runs_w2s(tmp_path):
    t0 = time.time()
    with RayHead(num_cpus=2, num_gpus=2) as head:
        print(f"head up in {time.time() - t0:.0f}s ({len(head.failures)} failed tries)")
        # token auth is on, and only this head's token gets through (HTTP and the job CLI)
        assert requests.get(f"{head.dashboard}/api/authentication_mode", timeout=10).json() == \
            {"authentication_mode": "token"}
        assert requests.get(f"{head.dashboard}/api/jobs/", timeout=10).status_code == 401
        assert requests.get(f"{head.dashboard}/api/jobs/", headers={"Authorization": "Bearer wrong"},
                            timeout=10).status_code == 403
        refused = run_cli([RAY, "job", "list", "--address", head.dashboard], head.client_env(token="wrong"), 60)
        assert refused.returncode != 0 and "Invalid authentication token" in refused.stderr, refused.stderr[-2000:]

        run_dir = tmp_path / "run"
        sid = f"w2s-tiny-{uuid.uuid4().hex[:8]}"
        t = time.time()
        submit = run_cli([RAY, "job", "submit", "--address", head.dashboard, "--submission-id", sid,
                          "--working-dir", ".", "--runtime-env-json", json.dumps({"excludes": EXCLUDES}),
                          "--", "w2s", "run", "configs/tiny.yaml", f"run_dir={run_dir}", *OVERRIDES],
                         head.client_env(), timeout=270, cwd=ROOT)
        seconds = time.time() - t
        logs = submit.stdout + submit.stderr
        assert submit.returncode == 0, f"{logs[-6000:]}\n--- head:\n{head.log_tail()}"
        status = run_cli([RAY, "job", "status", "--address", head.dashboard, sid], head.client_env(), 60)
        assert f"Job '{sid}' succeeded" in status.stdout + status.stderr, status.stdout + status.stderr
        # the job API (what JobSubmissionClient reads) says SUCCEEDED, and the entrypoint's driver
        # connected to this head (RAY_ADDRESS set by the job supervisor): not a local cluster of its own
        job = requests.get(f"{head.dashboard}/api/jobs/{sid}", headers=head.auth, timeout=10).json()
        assert job["status"] == "SUCCEEDED" and job["entrypoint"].startswith("w2s run configs/tiny.yaml"), job
        assert job["driver_info"] and job["driver_info"]["id"], job
        assert "== stage eval" in logs

        t1 = time.time()
    print(f"head stopped in {time.time() - t1:.0f}s")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    acc = metrics["evaluation"]["accuracy"]
    for name in ("weak tiny_a", "strong ceiling", "strong zero-shot", "w2s naive"):
        assert 0.0 <= acc[name] <= 1.0, name
    assert set(metrics["evaluation"]["pgr"]) == {"w2s naive"}
    assert metrics["data"]["counts"] == {"weak_train": 0, "held_out": 16, "test": 8}
    report = (run_dir / "report.md").read_text()
    assert "w2s naive" in report
    stages = {k: v.get("seconds") for k, v in metrics["stages"].items()}
    print(f"job {sid}: submit to SUCCEEDED in {seconds:.0f}s; w2s run {metrics['seconds']:.0f}s {stages}")
