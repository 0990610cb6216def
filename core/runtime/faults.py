"""Deliberate crash points for fault tests: ``PATRIOT_FAULTS="relay.after_publish=0.05,..."``.

At a named point the process SIGKILLs itself with the given probability, so a test can be sure every window
(between commit and publish, between publish and marking published) is hit. A test in the same process may
also hold a named point (``pauses``) to interleave another command there deterministically. Unset in
production: a no-op.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class FaultPlan:
    probabilities: dict[str, float] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    pauses: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)

    @classmethod
    def from_env(cls, value: str | None = None) -> FaultPlan:
        raw = value if value is not None else os.environ.get("PATRIOT_FAULTS", "")
        plan: dict[str, float] = {}
        for item in filter(None, (p.strip() for p in raw.split(","))):
            name, _, prob = item.partition("=")
            plan[name] = float(prob or 1.0)
        return cls(plan)

    def maybe_crash(self, point: str) -> None:
        """SIGKILL this process at ``point`` with the configured probability (no cleanup, like a power cut)."""
        probability = self.probabilities.get(point)
        if probability and self.rng.random() < probability:
            os.kill(os.getpid(), signal.SIGKILL)

    async def pause(self, point: str) -> None:
        """Wait at ``point`` for what a test put there (nothing, unless a test did)."""
        hold = self.pauses.get(point)
        if hold is not None:
            await hold()
