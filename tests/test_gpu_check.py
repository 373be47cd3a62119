"""benchmarks/gpu_check.py end to end on the CPU (2 layers, one model, 2 steps; ~20 s of CPU):
the tokenizer from a tar as on the GPU machine, HFBackend scoring / generation and
training.sft_trainer.fit_local on an in-memory model, no ray / deepspeed / trl / vllm import
from the project's code."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_smoke(tmp_path, smollm2_ready):
    from actors.embedded import model_dir

    src = model_dir("smollm2-135m-instruct")
    tar = tmp_path / "tok.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            if (src / f).is_file():
                tf.add(src / f, arcname=f"smollm2-135m-instruct/{f}")
    out = tmp_path / "gpu_check.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--small",
           "--models", "smollm2-135m", "--tokenizers", str(tar), "--steps", "2", "--warmup", "1",
           "--micro-batch", "2", "--train-len", "32", "--gen-prompts", "1", "--gen-tokens", "2", "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, check=False,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    table = out.read_text()
    assert "imported by the project's code: none" in table
    assert "| result | **PASS** |" in table
    assert "score_options max abs dp, cpu bf16 vs cpu fp32" in table and "Overall: PASS" in table


def test_gpu_check_configs_are_the_embedded_ones(smollm2_ready):
    import json

    from actors.embedded import model_dir

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    for key, (name, cfg, _) in gpu_check.MODELS.items():
        path = model_dir(name) / "config.json"
        if path.is_file():  # gemma3-270m may not be set up where only SmolLM2 is
            # the version that converted the cache is not part of the architecture
            drop = lambda d: {k: v for k, v in d.items() if k != "transformers_version"}  # noqa: E731
            assert drop(json.loads(path.read_text())) == drop(cfg), key
