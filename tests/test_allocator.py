"""The Ray Train workers' allocator (cluster.config.allocator_env, OptimConfig.allocator): Ray's own
jemalloc is preloaded with purging off, `auto` picks it under DeepSpeed and glibc's settings for
engine torch, and a real Ray Train worker started through training.launcher runs on the allocator
its config resolves to (jemalloc mapped or not: the LD_PRELOAD reached it).

Why (docs/measurements.md): Ray Train runs the loop in a thread, and glibc serves a thread's blocks
over 64 MB with fresh mmaps each step; ZeRO-2 under Ray ran at 0.54 of in-process with glibc and
1.01 with jemalloc."""

from pathlib import Path

import pytest

from cluster.config import JEMALLOC_CONF, MALLOC_ENV, allocator_env, jemalloc_path
from training import launcher
from training.dpo_config import DPOConfig
from training.optim_config import resolve_allocator
from training.sft_config import TrainConfig


def test_jemalloc_comes_with_ray_and_is_preloaded():
    lib = jemalloc_path()
    assert lib is not None and Path(lib).is_file() and lib.endswith("ray/core/libjemalloc.so")
    assert allocator_env("jemalloc") == {"LD_PRELOAD": lib, "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}
    assert JEMALLOC_CONF == "dirty_decay_ms:-1,muzzy_decay_ms:-1"
    assert allocator_env("glibc") == MALLOC_ENV and "LD_PRELOAD" not in allocator_env("glibc")


def test_unknown_allocator_names_the_key():
    with pytest.raises(ValueError, match=r"^allocator: must be one of"):
        allocator_env("tcmalloc")


def test_auto_allocator_follows_the_engine():
    assert TrainConfig().allocator == DPOConfig().allocator == "auto"
    assert resolve_allocator(TrainConfig(engine="deepspeed")) == "jemalloc"
    assert resolve_allocator(TrainConfig(engine="torch")) == "glibc"
    assert resolve_allocator(DPOConfig(engine="deepspeed")) == "jemalloc"
    assert resolve_allocator(TrainConfig(engine="torch", allocator="jemalloc")) == "jemalloc"
    assert resolve_allocator(TrainConfig(engine="deepspeed", allocator="glibc")) == "glibc"


def test_worker_env_keeps_extras_and_the_cpu_accelerator():
    env = launcher.worker_env(False, {"X": "1"}, "glibc")
    assert env == {**MALLOC_ENV, "X": "1", "DS_ACCELERATOR": "cpu"}
    assert launcher.worker_env(True, None, "jemalloc") == allocator_env("jemalloc")


@pytest.mark.parametrize("allocator,engine,expect", [("jemalloc", "torch", "jemalloc"), ("glibc", "deepspeed", "glibc"),
                                                      ("auto", "deepspeed", "jemalloc")])
def test_ray_train_worker_runs_on_the_chosen_allocator(ray_cluster, tmp_path, allocator, engine, expect):
    def maps_worker(job):  # nested: pickled by value (this test module is not importable in workers)
        import os

        libs = sorted({line.split()[-1] for line in open("/proc/self/maps") if "malloc" in line.split()[-1]})
        Path(job["out"]).write_text("\n".join(libs + ["conf=" + os.environ.get("MALLOC_CONF", "")]))

    cfg = TrainConfig(num_workers=1, cpus_per_worker=1, allocator=allocator, engine=engine)
    out = tmp_path / "maps.txt"
    launcher.launch(maps_worker, {"out": str(out)}, cfg, name=f"alloc_{allocator}_{engine}", storage=tmp_path / "rt",
                    use_gpu=False)
    lines = out.read_text().splitlines()
    has_jemalloc = any(line.endswith("libjemalloc.so") for line in lines)
    assert has_jemalloc == (expect == "jemalloc")
    assert lines[-1] == "conf=" + (JEMALLOC_CONF if expect == "jemalloc" else "")
