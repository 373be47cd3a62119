"""Resource planning: every weak model and the strong model on its own GPU bundle.

A role with GPU share s <= 1 packs round(1/s) actors into one {"GPU": 1} bundle (they run one
after another on that GPU); s >= 1 gives each actor a bundle of s GPUs. On a CPU box the same
plan runs unchanged on logical GPUs (`ray.init(num_gpus=plan.total_gpus)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cluster.config import ClusterConfig


@dataclass(frozen=True)
class RolePlan:
    role: str
    num_actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    bundles: tuple[dict, ...]
    bundle_of_actor: tuple[int, ...]  # actor index -> bundle index

    @property
    def gpus(self) -> float:
        return sum(b.get("GPU", 0) for b in self.bundles)


@dataclass(frozen=True)
class ResourcePlan:
    roles: dict[str, RolePlan]
    strategy: str

    @property
    def total_gpus(self) -> int:
        return int(math.ceil(sum(r.gpus for r in self.roles.values())))

    @property
    def total_cpus(self) -> float:
        return sum(b.get("CPU", 0) for r in self.roles.values() for b in r.bundles)

    def describe(self) -> str:
        parts = [f"{r.role}: {r.num_actors} actor(s) x {r.gpus_per_actor:g} GPU in {len(r.bundles)} bundle(s)"
                 for r in self.roles.values()]
        return f"plan ({self.total_gpus} GPU(s), {self.total_cpus:g} CPU(s)): " + "; ".join(parts)


def plan_resources(counts: dict[str, int], cfg: ClusterConfig, cluster_cpus: float | None = None) -> ResourcePlan:
    """Plan bundles for roles {"weak": N, "strong": 1}. cluster_cpus sizes per-actor CPUs."""
    total_actors = sum(counts.values())
    if total_actors == 0:
        raise ValueError("plan: no actors to place")
    if cfg.cpus_per_actor is not None:
        cpus = cfg.cpus_per_actor
    else:
        avail = max((cluster_cpus or 1.0) - cfg.reserve_cpus, 0.25)
        cpus = max(round(avail / total_actors, 3), 0.05)
    roles = {}
    for role, n in counts.items():
        if n <= 0:
            continue
        share = cfg.weak_gpu if role == "weak" else cfg.strong_gpu
        roles[role] = _role_plan(role, n, share, cpus)
    return ResourcePlan(roles, cfg.strategy)


def _role_plan(role: str, n: int, share: float, cpus: float) -> RolePlan:
    if share >= 1:
        bundles = tuple({"GPU": float(share), "CPU": cpus} for _ in range(n))
        return RolePlan(role, n, float(share), cpus, bundles, tuple(range(n)))
    per_gpu = int(round(1 / share))
    n_bundles = math.ceil(n / per_gpu)
    bundles = tuple({"GPU": 1.0, "CPU": cpus * min(per_gpu, n - b * per_gpu)} for b in range(n_bundles))
    return RolePlan(role, n, share, cpus, bundles, tuple(i // per_gpu for i in range(n)))


def share_key(role: str) -> str:
    """The config key that sets a role's GPU share (plan_resources reads weak_gpu for the weak
    role, strong_gpu for every other)."""
    return "cluster.weak_gpu" if role == "weak" else "cluster.strong_gpu"


def check_fits(role_plan: RolePlan, strategy: str, node_gpus: list[float]) -> None:
    """Refuse a role that no set of nodes could ever hold (Ray would wait forever): a bundle
    larger than the largest node, STRICT_PACK bundles that together exceed it, STRICT_SPREAD
    bundles that outnumber the nodes big enough for one. node_gpus: GPUs of each alive node."""
    from cluster.errors import InsufficientResourcesError

    need = max(b.get("GPU", 0) for b in role_plan.bundles)
    biggest = max(node_gpus, default=0.0)
    if need > biggest:
        key = share_key(role_plan.role)
        raise InsufficientResourcesError(
            f"{key}: a {role_plan.role} actor needs {need:g} GPU(s) on one node, but the largest node has "
            f"{biggest:g}; lower {key} or add nodes with more GPUs")
    if strategy == "STRICT_PACK" and role_plan.gpus > biggest:
        raise InsufficientResourcesError(
            f"cluster.strategy: STRICT_PACK puts all {role_plan.num_actors} {role_plan.role} actor(s) "
            f"({role_plan.gpus:g} GPUs) on one node, but the largest has {biggest:g}; use PACK or SPREAD")
    fitting = sum(g >= need for g in node_gpus)
    if strategy == "STRICT_SPREAD" and len(role_plan.bundles) > fitting:
        raise InsufficientResourcesError(
            f"cluster.strategy: STRICT_SPREAD needs {len(role_plan.bundles)} nodes with >= {need:g} GPU(s) for "
            f"the {role_plan.role} role, the cluster has {fitting}; use SPREAD or PACK")
