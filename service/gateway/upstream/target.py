"""Which gRPC target strings the gateway accepts as its upstream, checked before a channel is opened.

gRPC takes almost any string and fails only later, on the first call, with UNAVAILABLE; a typo in the upstream
should instead stop `tlserve serve` with one line. Accepted, each address with an explicit port:
`HOST:PORT`, `dns:///HOST:PORT` (also `dns://AUTHORITY/HOST:PORT`), `ipv4:ADDR:PORT[,ADDR:PORT...]` and
`ipv6:[ADDR]:PORT[,[ADDR]:PORT...]`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

TARGET_FORMS = "HOST:PORT, dns:///HOST:PORT or ipv4:ADDR:PORT[,ADDR:PORT...]"

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")
_DNS_PREFIX = re.compile(r"^dns:(?://[^/]*/)?")


def check_upstream_target(target: str) -> str:
    """Return `target` unchanged if it is one of the accepted forms, else raise ValueError naming the forms."""
    if not _is_valid(target):
        raise ValueError(f"expected {TARGET_FORMS}, got {target!r}")
    return target


def _is_valid(target: str) -> bool:
    if target.startswith("ipv4:"):
        return _is_address_list(target.removeprefix("ipv4:"), _is_ipv4_address)
    if target.startswith("ipv6:"):
        return _is_address_list(target.removeprefix("ipv6:"), _is_bracketed_ipv6_address)
    if target.startswith("dns:"):
        return _is_address(_DNS_PREFIX.sub("", target), _is_host)
    return _is_address(target, _is_host)


def _is_address_list(addresses: str, is_host: Callable[[str], bool]) -> bool:
    return all(_is_address(address, is_host) for address in addresses.split(","))


def _is_address(address: str, is_host: Callable[[str], bool]) -> bool:
    """`host:8500` with a port in 1..65535 and a host that `is_host` accepts."""
    host, _, port = address.rpartition(":")
    return port.isdigit() and 0 < int(port) < 65536 and is_host(host)


def _is_host(host: str) -> bool:
    return _HOST_NAME.match(host) is not None or _is_bracketed_ipv6_address(host)


def _is_ipv4_address(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _is_bracketed_ipv6_address(host: str) -> bool:
    if not (host.startswith("[") and host.endswith("]")):
        return False
    try:
        ipaddress.IPv6Address(host[1:-1])
    except ValueError:
        return False
    return True
