"""One optimisation config (training.optim_config.OptimConfig) under the SFT and the DPO settings:
TrainConfig and DPOConfig share its fields and its one validator (each error names the one field
that is wrong), YAML keys keep working through inheritance, and `precision: auto` resolves the
same way for both trainers (resolve_precision)."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from actors import backend
from cluster.loader import build
from training.dpo_config import DPOConfig
from training.optim_config import OptimConfig, resolve_precision
from training.sft_config import TrainConfig

SHARED = [f.name for f in dataclasses.fields(OptimConfig)]


def _message(cls, **kw) -> str:
    with pytest.raises(ValueError) as e:
        cls(**kw)
    return str(e.value)


def test_both_configs_extend_the_optimisation_config():
    assert issubclass(TrainConfig, OptimConfig) and issubclass(DPOConfig, OptimConfig)
    for cls in (TrainConfig, DPOConfig):
        assert [f.name for f in dataclasses.fields(cls)][:len(SHARED)] == SHARED
    # each class keeps its own defaults: SFT's are OptimConfig's, DPO overrides three
    assert {k: getattr(TrainConfig(), k) for k in SHARED} == dataclasses.asdict(OptimConfig())
    d = DPOConfig()
    assert (d.lr, d.micro_batch, d.max_length) == (5e-7, 4, 1024)
    assert {k: getattr(d, k) for k in SHARED if k not in ("lr", "micro_batch", "max_length")} == \
        {k: v for k, v in dataclasses.asdict(OptimConfig()).items() if k not in ("lr", "micro_batch", "max_length")}
    assert set(dataclasses.fields(DPOConfig)) - set(dataclasses.fields(OptimConfig))  # beta, epsilon, ...
    assert "beta" not in TrainConfig.__dataclass_fields__ and "head" not in DPOConfig.__dataclass_fields__


@pytest.mark.parametrize("field,value", [
    ("precision", "fp16"), ("checkpoint_every", -1), ("warmup_steps", -1), ("lr", 0.0), ("epochs", 0.0),
    ("max_steps", -1), ("micro_batch", 0), ("grad_accum", 0), ("num_workers", 0), ("cpus_per_worker", 0.0),
    ("use_gpu", "yes"), ("engine", "fsdp"), ("zero_stage", 4), ("max_length", 4), ("lr_schedule", "step"),
    ("weight_decay", -0.1), ("grad_clip", 0.0), ("max_failures", -1), ("seed", -1), ("allocator", "tcmalloc"),
    ("controller_poll_s", 0.0),
])
def test_shared_fields_have_one_validator(field, value):
    messages = {_message(cls, **{field: value}) for cls in (OptimConfig, TrainConfig, DPOConfig)}
    assert len(messages) == 1  # the same message from both trainers' configs
    (msg,) = messages
    assert msg.split(": ", 1)[0] == field  # names exactly the field that is wrong


def test_offload_rule_is_shared():
    assert _message(TrainConfig, engine="torch", offload=True) == _message(DPOConfig, engine="torch", offload=True) \
        == "offload: needs engine: deepspeed"


@pytest.mark.parametrize("field,value", [
    ("head", "value"), ("lm_normalize", "tokens"), ("gamma_max", 1.5), ("gamma_warmup_frac", 0.0),
    ("edl_lambda", -1.0), ("edl_anneal_frac", 0.0), ("edl_anneal_frac", 1.5), ("soft_loss", "mse"),
    ("soft_split", "sum"), ("soft_kl_coef", -1.0), ("soft_clamp_max", -1.0),
])
def test_sft_fields_name_themselves(field, value):
    assert _message(TrainConfig, **{field: value}).split(": ", 1)[0] == field


@pytest.mark.parametrize("field,value", [("beta", 0.0), ("epsilon", 0.5), ("epsilon", -0.1)])
def test_dpo_fields_name_themselves(field, value):
    assert _message(DPOConfig, **{field: value}).split(": ", 1)[0] == field


def test_yaml_keys_keep_working_through_inheritance():
    from pipelines.align import AlignConfig
    from pipelines.roles import StrongConfig

    strong = build(StrongConfig, {"spec": "tiny:llama:1", "train": {"lr": 3e-4, "warmup_steps": 2, "gamma_max": 0.3}})
    assert (strong.train.lr, strong.train.warmup_steps, strong.train.gamma_max) == (3e-4, 2, 0.3)
    align = build(AlignConfig, {"dpo": {"lr": 1e-6, "epsilon": 0.1, "precision": "fp32"}})
    assert isinstance(align.dpo, DPOConfig) and (align.dpo.lr, align.dpo.epsilon, align.dpo.precision) == \
        (1e-6, 0.1, "fp32")
    with pytest.raises(ValueError, match=r"^dpo\.checkpoint_every: must be >= 0"):
        build(AlignConfig, {"dpo": {"checkpoint_every": -1}})
    with pytest.raises(ValueError, match=r"^train\.edl_anneal_frac: must be in \(0, 1\]"):
        build(StrongConfig, {"spec": "tiny:llama:1", "train": {"edl_anneal_frac": 0}})


@pytest.mark.parametrize("flags,speedup,want", [(True, 2.5, True), (True, 6.0, True), (True, 0.5, False),
                                                (True, 1.1, False), (False, 3.0, False)])
def test_cpu_bf16_needs_the_flags_and_a_measured_speedup(monkeypatch, flags, speedup, want):
    # the kinds measured: AMX 6x, AMD EPYC 2.5x, an Intel Xeon with AMX hidden 0.5x (bf16 slower)
    monkeypatch.delenv("W2S_CPU_BF16", raising=False)
    monkeypatch.setattr(backend, "cpu_bf16_flags", lambda: flags)
    monkeypatch.setattr(backend, "machine_bf16_speedup", lambda: speedup)
    assert backend.cpu_supports_bf16() is want
    assert resolve_precision("auto", "cpu") == ("bf16" if want else "fp32")
    assert backend.resolve_dtype("auto", "cpu") == (torch.bfloat16 if want else torch.float32)
    for forced in ("1", "0"):  # the override wins over the measurement
        monkeypatch.setenv("W2S_CPU_BF16", forced)
        assert backend.cpu_supports_bf16() is (forced == "1")
    monkeypatch.setenv("W2S_CPU_BF16", "yes")
    with pytest.raises(ValueError, match="^W2S_CPU_BF16: must be 0 or 1"):
        backend.cpu_supports_bf16()


def test_cpu_bf16_speedup_is_a_measured_ratio():
    backend.cpu_bf16_speedup.cache_clear()
    r = backend.cpu_bf16_speedup(n=128, reps=1)
    assert 0.05 < r < 50 and backend.cpu_bf16_speedup(n=128, reps=1) == r  # cached: one probe per process
    backend.cpu_bf16_speedup.cache_clear()


def test_the_bf16_ratio_is_measured_once_per_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("W2S_CACHE", str(tmp_path))
    backend.machine_bf16_speedup.cache_clear()
    monkeypatch.setattr(backend, "cpu_bf16_speedup", lambda: 2.5)
    assert backend.machine_bf16_speedup() == 2.5
    known = json.loads((tmp_path / "cpu_bf16.json").read_text())
    assert known == {backend._machine_key(): 2.5}
    # a later process on the machine (cache cleared) reads the figure instead of measuring again
    backend.machine_bf16_speedup.cache_clear()
    monkeypatch.setattr(backend, "cpu_bf16_speedup", lambda: 0.5)
    assert backend.machine_bf16_speedup() == 2.5
    # another machine's entry (another key) is not this machine's
    (tmp_path / "cpu_bf16.json").write_text(json.dumps({"other host | cpu": 9.0}))
    backend.machine_bf16_speedup.cache_clear()
    assert backend.machine_bf16_speedup() == 0.5
    assert json.loads((tmp_path / "cpu_bf16.json").read_text())["other host | cpu"] == 9.0
    backend.machine_bf16_speedup.cache_clear()


def test_processes_probing_at_once_agree(tmp_path):
    # each child's own probe would return its pid; under the lock the first one's figure wins
    child = ("import os, time; from actors import backend; "
             "backend.cpu_bf16_speedup = lambda: (time.sleep(1.0), float(os.getpid()))[1]; "
             "print(backend.machine_bf16_speedup())")
    env = {**os.environ, "W2S_CACHE": str(tmp_path), "PYTHONPATH": str(Path(__file__).parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", child], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [float(p.communicate(timeout=120)[0]) for p in procs]
    assert len(set(outs)) == 1 and outs[0] in {float(p.pid) for p in procs}, outs


@pytest.mark.parametrize("cpu_bf16", [True, False])
def test_precision_auto_resolves_the_same_for_both_trainers(monkeypatch, tmp_path, cpu_bf16):
    from training import dpo_trainer as D
    from training.sft_trainer import _autocast

    monkeypatch.setattr(backend, "cpu_supports_bf16", lambda: cpu_bf16)
    want = "bf16" if cpu_bf16 else "fp32"
    assert resolve_precision("auto", "cpu") == want
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="^precision: "):
        resolve_precision("fp16", "cpu")
    # SFT: bf16 autocast around the forward exactly when resolved to bf16
    with _autocast(TrainConfig(), "cpu"):
        assert torch.is_autocast_enabled("cpu") == cpu_bf16
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    # DPO, engine torch: HF / TRL bf16 on the CPU (accelerate's autocast)
    job = D.DPOJob(name="p", policy="tiny:llama:1", data=str(tmp_path / "p.parquet"), out_dir=str(tmp_path),
                   config=DPOConfig(engine="torch"))
    args = D.dpo_config(job, str(tmp_path / "ck"), on_gpu=False)
    assert args.bf16 == cpu_bf16 and args.use_cpu
    # DPO, engine deepspeed on CPU: DeepSpeed in fp32, the trainer's forwards under bf16 autocast
    ds = dataclasses.replace(job, config=DPOConfig(engine="deepspeed"))
    assert not D.dpo_config(ds, str(tmp_path / "ck"), on_gpu=False).bf16
    assert D._cpu_autocast(ds.config, on_gpu=False) == cpu_bf16
    # explicit values are not resolved
    assert not D.dpo_config(dataclasses.replace(job, config=DPOConfig(engine="torch", precision="fp32")),
                            str(tmp_path / "ck"), on_gpu=False).bf16
    with _autocast(TrainConfig(precision="fp32"), "cpu"):
        assert not torch.is_autocast_enabled("cpu")
