"""Every declared extra resolves with the project's pins: `pip install --dry-run` of the project
with `[vllm]` (only the package index is needed; nothing is installed). vLLM pins its own
transformers and torch, so this is where a pin that breaks the cluster install shows first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = meta["dependencies"] + [r for rs in meta["optional-dependencies"].values() for r in rs]
    return {r.split("==")[0].split("[")[0].lower(): r.split("==")[1] for r in reqs if "==" in r}


def test_vllm_extra_resolves_with_the_pins(tmp_path):
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
         f"{ROOT}[vllm]"], capture_output=True, text=True, timeout=900, env={**os.environ, "DS_BUILD_OPS": "0"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    chosen = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    pins = _pins()
    assert chosen["vllm"] == pins["vllm"]
    for name in ("transformers", "ray", "deepspeed", "trl", "peft", "accelerate"):
        assert chosen[name] == pins[name], (name, chosen[name], pins[name])
    assert chosen["torch"].split("+")[0] == pins["torch"]  # a local +cpu / +cuXXX build satisfies the pin
