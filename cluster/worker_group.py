"""WorkerGroup: N actors of one model role in one placement group.

It owns the placement group, waits for it and for every actor's `ready()` with a timeout,
removes everything it started when any step fails, and raises typed errors. Actors restart on
crash (`max_restarts`) and their in-flight calls are retried (`max_task_retries`), so a weak
model that dies mid-stream does not lose rows.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from cluster.config import ClusterConfig
from cluster.errors import PlacementTimeoutError, WorkerCallError, WorkerStartError
from cluster.plan import RolePlan, check_fits


class WorkerGroup:
    def __init__(self, actor_cls: type, role_plan: RolePlan, cfg: ClusterConfig,
                 actor_kwargs: list[dict[str, Any]], actor_names: list[str] | None = None):
        if len(actor_kwargs) != role_plan.num_actors:
            raise ValueError(f"{role_plan.role}: {len(actor_kwargs)} actor configs for {role_plan.num_actors} planned actors")
        self.role = role_plan.role
        self.plan = role_plan
        self.cfg = cfg
        self.names = actor_names or [f"{self.role}_{i}" for i in range(role_plan.num_actors)]
        self.actors: list[Any] = []
        self.infos: list[dict] = []
        self.pg = None
        self._start(actor_cls, actor_kwargs)

    def _start(self, actor_cls: type, actor_kwargs: list[dict]) -> None:
        t0 = time.time()
        if any(b.get("GPU", 0) for b in self.plan.bundles):
            check_fits(self.plan, self.cfg.strategy,
                       [n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n.get("Alive")])
        self.pg = placement_group(list(self.plan.bundles), strategy=self.cfg.strategy, name=f"w2s-{self.role}")
        try:
            ray.get(self.pg.ready(), timeout=self.cfg.ready_timeout_s)
        except GetTimeoutError:
            self.shutdown()
            raise PlacementTimeoutError(
                f"{self.role}: placement group {list(self.plan.bundles)} not ready after "
                f"{self.cfg.ready_timeout_s:g} s (cluster has {ray.available_resources()} free)"
            ) from None
        remote_cls = ray.remote(actor_cls)
        for i, kwargs in enumerate(actor_kwargs):
            strategy = PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=self.plan.bundle_of_actor[i])
            self.actors.append(remote_cls.options(
                num_cpus=self.plan.cpus_per_actor,
                num_gpus=self.plan.gpus_per_actor,
                max_restarts=self.cfg.max_restarts,
                max_task_retries=self.cfg.max_task_retries,
                scheduling_strategy=strategy,
                runtime_env={"env_vars": dict(self.cfg.actor_env)} if self.cfg.actor_env else None,
            ).remote(**kwargs))
        remaining = max(self.cfg.ready_timeout_s - (time.time() - t0), 1.0)
        refs = [a.ready.remote() for a in self.actors]
        for i, ref in enumerate(refs):
            try:
                self.infos.append(ray.get(ref, timeout=remaining))
            except GetTimeoutError:
                self.shutdown()
                raise WorkerStartError(self.role, i, f"not ready after {self.cfg.ready_timeout_s:g} s") from None
            except (RayActorError, RayTaskError) as e:
                self.shutdown()
                raise WorkerStartError(self.role, i, _root_cause(e)) from None

    def call(self, index: int, method: str, *args, **kwargs):
        return getattr(self.actors[index], method).remote(*args, **kwargs)

    def call_all(self, method: str, *args, timeout: float | None = None, **kwargs) -> list:
        refs = [getattr(a, method).remote(*args, **kwargs) for a in self.actors]
        try:
            return ray.get(refs, timeout=timeout)
        except (RayActorError, RayTaskError, GetTimeoutError) as e:
            raise WorkerCallError(f"{self.role}.{method} failed: {_root_cause(e)}") from e

    def shutdown(self) -> None:
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead
                pass
        self.actors = []
        if self.pg is not None:
            try:
                remove_placement_group(self.pg)
            except Exception:  # noqa: BLE001
                pass
            self.pg = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()


def _root_cause(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    text = str(cause).strip().splitlines()
    return text[-1] if text else type(cause).__name__
