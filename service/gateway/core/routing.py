"""Where unpinned requests go: the canary share, the default label, then the server's latest version.

A routed label the model lacks (upstream not found) falls back to the next choice and is skipped for
`MISSING_LABEL_RECHECK_S`. While it is unknown whether a model has a routed label, only one request probes it
(single flight); concurrent requests wait for that answer, so a burst does not send every image twice.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from service.gateway.core.targets import ModelTarget
from service.gateway.errors import NotFound
from service.gateway.settings import Settings

Result = TypeVar("Result")
LabelKey = tuple[str, str]  # (model, label)
MISSING_LABEL_RECHECK_S = 5.0  # a label the gateway routes to but the model lacks is probed again after this
MAX_MISSING_LABELS = 1024  # clients name models, so the memory of (missing or present) labels must stay bounded


class LabelRouter:
    """The routing choices for unpinned requests and what the gateway learnt about each model's labels."""

    def __init__(self, settings: Settings, rng: random.Random) -> None:
        self.settings = settings
        self._rng = rng
        # (model, label) → monotonic time at which to probe again a routed label the model did not have.
        self._missing_until: dict[LabelKey, float] = {}
        # Routed labels that answered (no probe needed) and probes in flight (concurrent requests wait for them).
        self._present: set[LabelKey] = set()
        self._probes: dict[LabelKey, asyncio.Future[bool]] = {}

    def routes(self, target: ModelTarget) -> list[ModelTarget]:
        """Where to send a request, in order of preference; each entry but the last falls back to the next.

        A pinned request goes only where it asked. An unpinned one goes to the canary label (its share), else to
        `default_label`, and last to the server's latest version (the client asked for no particular version, so
        that is no substitution). Labels the model lacked recently are skipped (one probe per interval).
        """
        if target.pinned:
            return [target]
        labels: list[str] = []
        share = self.settings.canary_share
        if share > 0 and self._rng.random() < share:
            labels.append(self.settings.canary_label)
        if self.settings.default_label:
            labels.append(self.settings.default_label)
        now = time.monotonic()
        routed = [
            ModelTarget(target.name, label=label, routed=True)
            for label in dict.fromkeys(labels)
            if now >= self._missing_until.get((target.name, label), 0.0)
        ]
        return [*routed, target]

    async def first_answer(
        self, targets: list[ModelTarget], call: Callable[[ModelTarget], Awaitable[Result]]
    ) -> Result:
        """`call` on each target until one is found; a routed label the model lacks is skipped for a while.

        Single flight: while the model has not yet shown whether it has a routed label, only the first request
        probes it; concurrent ones wait for that outcome instead of each sending their images to a label that
        may not exist (a burst would otherwise send every image upstream twice).
        """
        *preferred, last = targets
        for target in preferred:
            key = (target.name, target.label or "")
            probe = self._probes.get(key)
            if probe is not None:
                if not await asyncio.shield(probe):
                    continue  # the probe found no such label: go where it went
            elif key not in self._present:
                try:
                    return await self._probe(key, target, call)
                except NotFound:
                    continue
            try:
                return await call(target)
            except NotFound:
                self._remember_missing(target)
        return await call(last)

    async def _probe(
        self, key: tuple[str, str], target: ModelTarget, call: Callable[[ModelTarget], Awaitable[Result]]
    ) -> Result:
        """Call a routed label whose existence is unknown; waiters learn False (missing) or True (try it)."""
        probe: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._probes[key] = probe
        found = True  # any other outcome (an error, a cancellation) tells the waiters nothing: they try themselves
        try:
            result = await call(target)
            if len(self._present) >= MAX_MISSING_LABELS:
                self._present.clear()
            self._present.add(key)
            return result
        except NotFound:
            found = False
            self._remember_missing(target)
            raise
        finally:
            del self._probes[key]
            probe.set_result(found)

    def _remember_missing(self, target: ModelTarget) -> None:
        """Skip this routed label for a while; when too many are remembered, forget expired ones (or this one)."""
        now = time.monotonic()
        missing = self._missing_until
        if len(missing) >= MAX_MISSING_LABELS:
            for key in [key for key, until in missing.items() if until <= now]:
                del missing[key]
        key = (target.name, target.label or "")
        self._present.discard(key)
        if len(missing) < MAX_MISSING_LABELS:
            missing[key] = now + MISSING_LABEL_RECHECK_S
