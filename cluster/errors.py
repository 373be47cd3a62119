"""Typed errors of the cluster layer."""


class ClusterError(RuntimeError):
    """Base class: something about Ray resources or workers failed."""


class InsufficientResourcesError(ClusterError):
    """The plan needs more GPUs / CPUs than the cluster has."""


class PlacementTimeoutError(ClusterError):
    """A placement group was not ready within the timeout (resources never became free)."""


class WorkerStartError(ClusterError):
    """An actor of a WorkerGroup failed to start (model load error, crash in __init__)."""

    def __init__(self, role: str, index: int, cause: BaseException | str):
        self.role, self.index, self.cause = role, index, cause
        super().__init__(f"{role}[{index}] failed to start: {cause}")


class WorkerCallError(ClusterError):
    """A call on a worker failed after its retries."""
