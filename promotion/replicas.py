"""Several TF Serving replicas driven as one model server: which addresses `--server` names, and the group.

`--server a:8500,b:8500` lists the replicas; with `--all-replicas` each HOST is resolved to every address
it has (a Kubernetes headless Service has one per ready pod), so a label move reaches every pod and not
the one a ClusterIP Service happens to pick.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self

from promotion.client import AVAILABLE, ModelServerClient, ServerError, ServingClient
from tlserve.console import CommandError, split_host_port

logger = logging.getLogger(__name__)

# Least ready first. A version some replica does not report at all ranks below these (it is not loaded there).
READINESS = ("END", "UNLOADING", "UNKNOWN", "START", "LOADING", AVAILABLE)


def parse_servers(spec: str) -> list[str]:
    """`HOST:PORT[,HOST:PORT...]` as a list of targets in order, duplicates removed; an empty item is an error."""
    targets = [item.strip() for item in spec.split(",")]
    if not all(targets):
        raise CommandError(f"--server {spec!r}: empty address in the list (expected HOST:PORT[,HOST:PORT...])")
    return list(dict.fromkeys(targets))


def resolve_replicas(targets: Iterable[str]) -> list[str]:
    """Every distinct TCP address of every target's HOST, as `addr:port` (IPv6 as `[addr]:port`)."""
    resolved: list[str] = []
    for target in targets:
        resolved += _addresses(*split_host_port(target, flag="--server"))
    return list(dict.fromkeys(resolved))


def _addresses(host: str, port: int) -> list[str]:
    """The host's IPv4 addresses, or its IPv6 ones when it has no IPv4 address.

    One family only: a dual-stack name (localhost: 127.0.0.1 and ::1) is one server, not two replicas.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise CommandError(f"--all-replicas: cannot resolve {host}: {exc}") from exc
    ipv4 = [info for info in infos if info[0] == socket.AF_INET]
    addresses = [_format(str(info[4][0]), port, info[0]) for info in ipv4 or infos]
    if not addresses:
        raise CommandError(f"--all-replicas: {host} has no addresses (no ready replica?)")
    return addresses


def _format(address: str, port: int, family: int) -> str:
    return f"[{address}]:{port}" if family == socket.AF_INET6 else f"{address}:{port}"


def replica_targets(spec: str, *, all_replicas: bool = False) -> list[str]:
    """The replicas `--server SPEC [--all-replicas]` names, each one gRPC target."""
    targets = parse_servers(spec)
    return resolve_replicas(targets) if all_replicas else targets


def check_servers(spec: str, *, all_replicas: bool = False) -> None:
    """CommandError now for a `--server` that is malformed; no name is looked up (that happens at each move)."""
    targets = parse_servers(spec)
    if all_replicas:
        for target in targets:
            split_host_port(target, flag="--server")


def connect(targets: Sequence[str], *, rpc_timeout_s: float = 30.0) -> ServingClient:
    """One ModelServerClient for one target (the single-server behaviour), a ReplicaGroup for several."""
    if len(targets) == 1:
        return ModelServerClient(targets[0], rpc_timeout_s=rpc_timeout_s)
    return ReplicaGroup([ModelServerClient(target, rpc_timeout_s=rpc_timeout_s) for target in targets])


def appeared(discover: Callable[[], Sequence[str]], group: ServingClient) -> list[str]:
    """Targets `discover` finds now that are not in `group` (replicas that became ready since it was resolved).

    [] when the names do not resolve at the moment (logged: such newcomers then go undetected).
    """
    try:
        found = discover()
    except CommandError as exc:
        logger.warning("%s; replicas that became ready during the move are not detected", exc)
        return []
    known = {replica.target for replica in group.replicas}
    return [target for target in found if target not in known]


def set_back_error(exc: ServerError, failed: Sequence[str], done: str) -> ServerError:
    """One line after a config was reloaded on every replica again: the cause, and where it did not take."""
    reason = exc.reason if isinstance(exc, PartialReload) else str(exc)
    where = f"every replica but {', '.join(failed)}; see the log" if failed else "every replica"
    return ServerError(f"{reason} ({done} on {where})")


def merge_states(per_replica: Sequence[Mapping[int, str]]) -> dict[int, str]:
    """One state per version: AVAILABLE only when every replica says so, else the least ready replica's state.

    A version that some replica does not report is left out: it is not loaded everywhere.
    """
    merged: dict[int, str] = {}
    versions = set.intersection(*(set(states) for states in per_replica)) if per_replica else set()
    for version in sorted(versions):
        merged[version] = min((states[version] for states in per_replica), key=_readiness)
    return merged


def _readiness(state: str) -> int:
    return READINESS.index(state) if state in READINESS else -1


class PartialReload(ServerError):
    """A replica refused a config that the replicas before it had already taken."""

    def __init__(self, reason: str, reloaded: Sequence[str]) -> None:
        super().__init__(f"{reason} (replicas that already took this config: {', '.join(reloaded) or 'none'})")
        self.reason = reason
        self.reloaded = tuple(reloaded)


class ReplicaGroup:
    """Model servers that serve the same repository, used as one (the ServingClient interface)."""

    def __init__(self, replicas: Sequence[ModelServerClient]) -> None:
        if not replicas:
            raise ValueError("a replica group needs at least one model server")
        self.replicas = tuple(replicas)
        self.target = ",".join(replica.target for replica in self.replicas)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for replica in self.replicas:
            replica.close()

    def reload(self, config: Any) -> None:
        """Each replica in turn; the first refusal stops it with a PartialReload that says who already took it."""
        reloaded: list[str] = []
        for replica in self.replicas:
            try:
                replica.reload(config)
            except ServerError as exc:
                raise PartialReload(str(exc), reloaded) from exc
            reloaded.append(replica.target)

    def version_states(self, name: str) -> dict[int, str]:
        """Merged over the replicas (see merge_states)."""
        return merge_states([replica.version_states(name) for replica in self.replicas])

    def wait_available(self, name: str, version: int, *, timeout_s: float, poll_s: float = 0.1) -> None:
        """Until `version` is AVAILABLE on every replica, all within one `timeout_s` (the one a timeout names)."""
        deadline = time.monotonic() + timeout_s
        for replica in self.replicas:
            try:
                replica.wait_until(name, version, deadline=deadline, timeout_s=timeout_s, poll_s=poll_s)
            except TimeoutError as exc:
                raise TimeoutError(f"{exc} on replica {replica.target}") from exc

    def predict(self, request: Any, *, timeout_s: float | None = None) -> Any:
        """On the first replica: the infra gate times one server, and every replica loads the same files."""
        return self.replicas[0].predict(request, timeout_s=timeout_s)
