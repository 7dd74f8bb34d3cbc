"""How much a deployed task can run at once: pool processes per worker (``concurrency``), workers (``replicas``),
and the autoscaling range (``min_replicas`` .. ``max_replicas``). Checked in the MCP server, so bad input is
answered at once, and again in the deploy worker, which trusts no sender."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcs.core.errors import InvalidInput
from mcs.core.settings import Settings

FIELDS = ("concurrency", "replicas", "min_replicas", "max_replicas")


@dataclass(frozen=True)
class Capacity:
    concurrency: int = 1
    replicas: int = 1  # desired now
    min_replicas: int | None = None
    max_replicas: int | None = None

    @property
    def autoscaled(self) -> bool:
        return self.min_replicas is not None and self.max_replicas is not None and self.max_replicas > self.min_replicas

    @property
    def start_replicas(self) -> int:
        """Workers a deploy starts: at least one, which answers the health check and runs the test cases."""
        return max(1, self.replicas)

    def as_dict(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in FIELDS}


def _whole(field: str, value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(field, value, f"a whole number from {low} to {high} ({what})")
    return value


def check_replicas(value: Any, settings: Settings, field: str = "replicas", low: int = 0) -> int:
    return _whole(field, value, low, settings.max_replicas, "workers; MCS_MAX_REPLICAS is the most")


def check_capacity(given: dict[str, Any], settings: Settings, current: Capacity | None = None) -> Capacity:
    """The capacity of a deploy: each value given (not None), else the current deployment's, else the default.

    ``min_replicas`` and ``max_replicas`` go together (an autoscaling range, ``min <= max``); ``replicas`` defaults
    into that range and must lie in it when given."""
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise InvalidInput(unknown[0], given[unknown[0]], f"one of {', '.join(FIELDS)}")
    base = current or Capacity(settings.worker_concurrency, settings.worker_replicas)
    concurrency = given.get("concurrency")
    if concurrency is not None:
        _whole("concurrency", concurrency, 1, settings.max_concurrency, "pool processes; MCS_MAX_CONCURRENCY: most")
    low, high = given.get("min_replicas"), given.get("max_replicas")
    if (low is None) != (high is None):
        missing = "max_replicas" if high is None else "min_replicas"
        raise InvalidInput(missing, None, "min_replicas and max_replicas go together (the autoscaling range)")
    if low is None:
        low, high = base.min_replicas, base.max_replicas
    else:
        check_replicas(low, settings, "min_replicas")
        check_replicas(high, settings, "max_replicas", low=1)
        if low > high:
            raise InvalidInput("min_replicas", low, f"at most max_replicas ({high})")
    replicas = given.get("replicas")
    if replicas is not None:
        check_replicas(replicas, settings)
        if low is not None and high is not None and not low <= replicas <= high:
            raise InvalidInput("replicas", replicas, f"within min_replicas..max_replicas ({low}..{high})")
    else:
        replicas = base.replicas
        if low is not None and high is not None:
            replicas = min(max(replicas, max(low, 1)), high)
    return Capacity(concurrency or base.concurrency, replicas, low, high)
