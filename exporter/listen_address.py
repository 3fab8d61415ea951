"""The one parser of ``HOST:PORT`` listen addresses: config validation, config checks and the server."""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

DEFAULT_PORT = 10078

_HOSTNAME = re.compile(r"([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?)?")


class ListenAddress(NamedTuple):
    host: str | None  # None: all interfaces
    port: int


def parse_listen_address(value: str, *, allow_port_zero: bool = False) -> ListenAddress:
    """``HOST:PORT``; ``[v6addr]:PORT`` for IPv6; an empty host listens on all interfaces.

    Port 0 (the kernel picks a free port) is only for callers that read the bound port back, as the
    tests do: a configured port 0 would leave Prometheus nothing to scrape, so the config refuses it.
    """
    bad = f"invalid listen address {value!r}"
    hint = f"expected HOST:PORT, e.g. 0.0.0.0:{DEFAULT_PORT}, :{DEFAULT_PORT} or [::1]:{DEFAULT_PORT}"
    ipv6 = value.startswith("[")
    host, sep, port = value[1:].partition("]:") if ipv6 else value.rpartition(":")
    if not sep:
        raise ValueError(f"{bad}: no port ({hint})")
    try:
        if ipv6:
            ipaddress.IPv6Address(host)
        elif re.fullmatch(r"[0-9.]+", host):
            ipaddress.IPv4Address(host)
        elif not _HOSTNAME.fullmatch(host):
            raise ValueError(host)
    except ValueError:
        hint += "; IPv6 addresses go in brackets" if ":" in host else ""
        raise ValueError(f"{bad}: invalid host {host!r} ({hint})") from None
    lowest = 0 if allow_port_zero else 1
    if not re.fullmatch(r"[0-9]{1,5}", port) or not lowest <= int(port) <= 65535:
        raise ValueError(f"{bad}: invalid port {port!r} (use {lowest}-65535)")
    return ListenAddress(host or None, int(port))
