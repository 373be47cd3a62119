"""Connect to Ray: the address in the config or $RAY_ADDRESS, else an embedded local cluster."""

from __future__ import annotations

import logging
import os

import ray

from cluster.config import ClusterConfig
from cluster.errors import InsufficientResourcesError


def connect(cfg: ClusterConfig, gpus_needed: int = 0) -> dict:
    """Start or join Ray; returns the cluster's resources. Idempotent within a process.

    On a local cluster with no GPUs, `gpus_needed` logical GPUs are declared so the same
    placement plan as on a GPU cluster is scheduled (actors then run on CPU).
    """
    if not ray.is_initialized():
        address = cfg.address or os.environ.get("RAY_ADDRESS")
        common = dict(namespace=cfg.namespace, logging_level=logging.WARNING, log_to_driver=True)
        if address:
            ray.init(address=address, **common)
        else:
            num_gpus = cfg.num_gpus if cfg.num_gpus is not None else max(gpus_needed, _cuda_count())
            # address="local" never attaches to a stale /tmp/ray/ray_current_cluster.
            ray.init(address="local", num_cpus=cfg.num_cpus or os.cpu_count(), num_gpus=num_gpus,
                     include_dashboard=cfg.dashboard, **common)
    resources = ray.cluster_resources()
    if resources.get("GPU", 0) < gpus_needed:
        raise InsufficientResourcesError(
            f"the plan needs {gpus_needed} GPU(s) but the cluster has {resources.get('GPU', 0):g}; "
            "lower cluster.weak_gpu / strong_gpu shares, use fewer weak models, or score fewer models per "
            "evaluation pass (cluster.eval_models)"
        )
    return resources


def _cuda_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0
