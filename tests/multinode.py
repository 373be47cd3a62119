"""Scenarios on a real multi-node Ray cluster (ray.cluster_utils.Cluster: one raylet per node,
each with its own CPUs and logical GPUs), run in a fresh process so the test session's own
local cluster is untouched. Each prints one JSON line with what the test asserts on.

    python tests/multinode.py placement
    python tests/multinode.py annotate_node_loss /tmp/somewhere
    python tests/multinode.py train_node_loss /tmp/somewhere
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def start(workers: list[dict], head_cpus: int = 2):
    """A cluster whose head holds the driver (no GPUs) and `workers` nodes ({num_cpus, num_gpus})."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "num_gpus": 0})
    nodes = [cluster.add_node(**w) for w in workers]
    cluster.wait_for_nodes()
    return cluster, nodes


def cfg_for(cluster, **over):
    from cluster.config import ClusterConfig

    return ClusterConfig(**{"address": cluster.address, "cpus_per_actor": 0.25, "ready_timeout_s": 120, **over})


def placement() -> dict:
    """Which node each sim weak actor lands on under SPREAD and PACK, and the error for a bundle
    larger than any node."""
    import ray

    from actors.weak import WeakActor
    from actors.backend import BackendConfig
    from cluster.connect import connect
    from cluster.errors import InsufficientResourcesError
    from cluster.plan import plan_resources
    from cluster.worker_group import WorkerGroup

    cluster, nodes = start([{"num_cpus": 1, "num_gpus": 2} for _ in range(3)])
    out = {"worker_nodes": [n.node_id for n in nodes]}
    try:
        # SPREAD: 3 models on 3 nodes; PACK: 2 models (that fit one node) on one node
        for strategy, n in (("PACK", 2), ("SPREAD", 3)):
            cfg = cfg_for(cluster, strategy=strategy)
            connect(cfg, 0)
            plan = plan_resources({"weak": n}, cfg, 3.0)
            kwargs = [{"name": f"w{i}", "spec": f"sim:w{i}", "backend": BackendConfig()} for i in range(n)]
            with WorkerGroup(WeakActor, plan.roles["weak"], cfg, kwargs) as g:
                out[strategy] = [i["node_id"] for i in g.infos]
            _settle()
        for name, over, role, n in (("too_big", {"strong_gpu": 4.0}, "strong", 1),
                                    ("strict_spread", {"strategy": "STRICT_SPREAD"}, "weak", 4)):
            cfg = cfg_for(cluster, **over)
            plan = plan_resources({role: n}, cfg, 3.0)
            try:
                WorkerGroup(WeakActor, plan.roles[role], cfg,
                            [{"name": f"s{i}", "spec": f"sim:s{i}", "backend": BackendConfig()} for i in range(n)])
                out[name] = None
            except InsufficientResourcesError as e:
                out[name] = str(e)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return out


def _settle(timeout: float = 60.0) -> None:
    """Wait until a removed group's GPUs are free again (Ray frees them asynchronously), so the
    next group is placed on an empty cluster."""
    import ray

    deadline = time.time() + timeout
    while time.time() < deadline and ray.available_resources().get("GPU", 0) < ray.cluster_resources().get("GPU", 0):
        time.sleep(0.2)


def _actors(class_name: str) -> list[dict]:
    """GCS actor table rows (no dashboard needed): State, Address.NodeID, NumRestarts."""
    import ray._private.state as state

    return [a for a in state.actors().values() if a["ActorClassName"] == class_name]


def _choice_rows(n: int) -> list[dict]:
    return [{"id": f"r{i:04d}", "prompt": f"Question {i}: which is it?", "options": ["alpha", "beta", "gamma"],
             "label": i % 3} for i in range(n)]


def _remove_weak_node_when_started(cluster, nodes, labels: Path, seen: dict):
    """Once the first batch is written, remove (ungracefully) a worker node hosting a weak actor."""
    deadline = time.time() + 120
    while time.time() < deadline and not list(labels.glob("*.parquet")):
        time.sleep(0.1)
    weak_nodes = {a["Address"]["NodeID"] for a in _actors("WeakActor") if a["State"] == "ALIVE"}
    victim = next(nd for nd in nodes if nd.node_id in weak_nodes)
    seen.update(removed=victim.node_id, files_before=len(list(labels.glob("*.parquet"))),
                weak_nodes_before=sorted(weak_nodes))
    cluster.remove_node(victim, allow_graceful=False)


def _annotate(split: Path, labels: Path, cfg) -> dict:
    from actors.model_config import ModelConfig
    from actors.prompts import TemplateConfig
    from pipelines.annotate import AnnotateConfig, annotate_stage
    from pipelines.roles import WeakConfig

    weak = WeakConfig(models=[ModelConfig(spec="sim:a:400"), ModelConfig(spec="sim:b:400")])
    return annotate_stage(split, labels, weak, AnnotateConfig(method="ensemble", batch_rows=4, max_in_flight=4),
                          TemplateConfig(), cfg, log=lambda m: print(m, file=sys.stderr, flush=True))


def _written_ids(labels: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [i for f in sorted(labels.glob("*.parquet")) for i in pq.read_table(f)["id"].to_pylist()]


def annotate_node_loss(tmp: str, spare: str = "1") -> dict:
    """Annotation by 2 sim weak models on two worker nodes (SPREAD); the node of a weak actor is
    removed once the first batch is written. spare=1: a third node has room, the stage finishes
    in one command; spare=0: no room, the stage stops (StageInterrupted) with its rows kept, a
    node is added and the same call resumes."""
    import ray

    from pipelines.data import write_split
    from pipelines.runner import StageInterrupted

    tmp, n = Path(tmp), 96
    split, labels = tmp / "held_out", tmp / "labels"
    write_split(_choice_rows(n), split, shard_rows=8)
    cluster, nodes = start([{"num_cpus": 1, "num_gpus": 1} for _ in range(2 + int(spare))])
    cfg = cfg_for(cluster, strategy="SPREAD", ready_timeout_s=20 if spare == "0" else 120)
    seen: dict = {}
    killer = threading.Thread(target=_remove_weak_node_when_started, args=(cluster, nodes, labels, seen), daemon=True)
    killer.start()
    try:
        try:
            summary = _annotate(split, labels, cfg)
        except StageInterrupted as e:
            seen.update(interrupted=str(e), rows_kept=len(_written_ids(labels)))
            cluster.add_node(num_cpus=1, num_gpus=1)
            cluster.wait_for_nodes()
            summary = _annotate(split, labels, cfg)
        ids = _written_ids(labels)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {**seen, "rows": summary["rows"], "rows_new": summary["rows_new"], "ids_written": len(ids),
            "distinct_ids": len(set(ids)), "expected": n}


def _train_job(out: Path, examples, max_steps: int = 9):
    from training.sft_config import TrainConfig
    from training.sft_trainer import TrainJob

    train = TrainConfig(lr=1e-3, max_steps=max_steps, micro_batch=4, max_length=128, checkpoint_every=3,
                        num_workers=2, cpus_per_worker=1, max_failures=2)
    return TrainJob(name=out.name, spec="tiny:llama:1", out_dir=str(out), train=train, examples=examples,
                    num_options=4)


def train_node_loss(tmp: str) -> dict:
    """A 2-worker Ray Train job (gloo, one CPU per worker, so one worker per node) run twice on
    the same cluster: uninterrupted, then with the node of a worker removed after the first
    checkpoint (Ray Train restarts the worker group on the nodes left, from that checkpoint)."""
    import ray

    from actors.prompts import TemplateConfig
    from pipelines.data import DataConfig, read_source, split_rows
    from training.examples import ground_truth_examples
    from training.sft_trainer import fit, read_history

    tmp = Path(tmp)
    dcfg = DataConfig(source="embedded:mmlu", weak_train=32, held_out=0, test=0)
    examples = ground_truth_examples(split_rows(read_source(dcfg), dcfg)["weak_train"], TemplateConfig())
    cluster, nodes = start([{"num_cpus": 1, "num_gpus": 0} for _ in range(3)], head_cpus=1)
    ray.init(address=cluster.address, namespace="w2s")
    seen: dict = {}
    try:
        fit(_train_job(tmp / "full", examples), lambda m: None)
        seen["full_nodes"] = sorted({a["Address"]["NodeID"] for a in _actors("RayTrainWorker")})
        job = _train_job(tmp / "lost", examples)

        def remove_after_checkpoint():
            deadline = time.time() + 300
            ckpts = Path(job.out_dir) / "ray_train"
            while time.time() < deadline and not list(ckpts.glob("**/checkpoint_*/w2s_step.json")):
                time.sleep(0.05)
            alive = {a["Address"]["NodeID"] for a in _actors("RayTrainWorker") if a["State"] == "ALIVE"}
            victim = next(nd for nd in nodes if nd.node_id in alive)
            seen.update(steps_at_loss=len(read_history(job.out_dir)), worker_nodes=sorted(alive),
                        removed=victim.node_id)
            cluster.remove_node(victim, allow_graceful=False)

        th = threading.Thread(target=remove_after_checkpoint, daemon=True)
        th.start()
        fit(job, lambda m: print(m, file=sys.stderr, flush=True))
        th.join(timeout=5)
        seen["full"] = [h["loss"] for h in read_history(tmp / "full")]
        seen["lost"] = [h["loss"] for h in read_history(job.out_dir)]
        seen["steps"] = [h["step"] for h in read_history(job.out_dir)]
    finally:
        ray.shutdown()
        cluster.shutdown()
    return seen


SCENARIOS = {"placement": placement, "annotate_node_loss": annotate_node_loss, "train_node_loss": train_node_loss}

if __name__ == "__main__":
    result = SCENARIOS[sys.argv[1]](*sys.argv[2:])
    print("RESULT " + json.dumps(result), flush=True)
