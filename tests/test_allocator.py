"""The Ray Train workers' allocator (cluster.config.allocator_env, OptimConfig.allocator): Ray's own
jemalloc is preloaded with purging off, `auto` picks it under DeepSpeed and glibc's settings for
engine torch, and a real Ray Train worker started through training.launcher runs on the allocator
its config resolves to (jemalloc mapped or not: the LD_PRELOAD reached it).

Why (docs/measurements.md): Ray Train runs the loop in a thread, and glibc serves a thread's blocks
over 64 MB with fresh mmaps each step; ZeRO-2 under Ray ran at 0.54 of in-process with glibc and
1.01 with jemalloc. glibc's settings include MALLOC_ARENA_MAX=1, which puts a thread on the main
arena: a thread's 128 MB blocks are then reused (0 page faults against 131k without it)."""

import os
import subprocess
import sys
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


# In a thread (as Ray Train runs the loop): malloc, touch and free a 128 MB block 5 times; print the
# page faults of the last 4 rounds. Reused memory takes none; a fresh mmap each round takes 32k.
THREAD_FAULTS = """
import ctypes, resource, threading
libc = ctypes.CDLL("libc.so.6"); libc.malloc.restype = ctypes.c_void_p
def rounds(out):
    for i in range(5):
        if i == 1:
            start = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        p = libc.malloc(128 << 20); ctypes.memset(p, 1, 128 << 20); libc.free(ctypes.c_void_p(p))
    out.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - start)
out = []; t = threading.Thread(target=rounds, args=(out,)); t.start(); t.join(); print(out[0])
"""


def _thread_faults(env: dict) -> int:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", THREAD_FAULTS], env={**keep, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_glibc_settings_reach_a_thread():
    # MALLOC_ARENA_MAX=1 puts threads on the main arena, where the mmap threshold applies: the
    # torch engine's Ray Train worker went from 27k page faults a second to none
    assert _thread_faults(MALLOC_ENV) < 2000
    without = {k: v for k, v in MALLOC_ENV.items() if k != "MALLOC_ARENA_MAX"}
    assert _thread_faults(without) > 4 * 30000  # a thread arena: a fresh mmap every round


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
