"""Host names a sandbox may reach, answered from a table the parent resolved.

A sandbox that may connect to ``api.example.com:443`` cannot ask a DNS server itself: that takes
UDP, which the sandbox refuses (Landlock does not govern UDP, so any datagram could leave). The
parent resolves the names of the sandbox's endpoints when the child starts, and
:func:`install_resolver` makes ``socket.getaddrinfo`` and ``socket.gethostbyname`` (what asyncio,
``ssl``, ``http.client``, ``requests``, ``aiohttp`` and ``httpx`` use) answer from that table:
an address given as digits is used as it is, a listed name gets its addresses, any other name
does not resolve (``socket.gaierror``, EAI_NONAME) with a message saying why.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["install_resolver"]


def install_resolver(hosts: Mapping[str, Sequence[str]]) -> None:
    """Answer name lookups of this process from ``hosts`` (name -> addresses)."""
    table = {name.lower().rstrip("."): tuple(addresses) for name, addresses in hosts.items()}
    numeric = socket.getaddrinfo

    def addresses_of(host: str | bytes) -> tuple[str, ...]:
        name = host.decode("idna") if isinstance(host, bytes) else host
        found = table.get(name.lower().rstrip("."))
        if not found:
            raise socket.gaierror(
                socket.EAI_NONAME,
                f"{name} is not among the hosts this sandbox may reach "
                f"({', '.join(sorted(table)) or 'none'}); list it in Sandbox(network=[...])",
            )
        return found

    def getaddrinfo(
        host: str | bytes | None,
        port: Any,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        if host is None:
            return numeric(host, port, family, type, proto, flags)
        try:
            return numeric(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            pass
        results: list[Any] = []
        for address in addresses_of(host):
            results.extend(
                numeric(address, port, family, type, proto, flags | socket.AI_NUMERICHOST)
            )
        return results

    def gethostbyname(host: str) -> str:
        try:
            return str(numeric(host, None, socket.AF_INET, 0, 0, socket.AI_NUMERICHOST)[0][4][0])
        except socket.gaierror:
            pass
        for address in addresses_of(host):
            if ":" not in address:
                return address
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no IPv4 address in this sandbox")

    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = gethostbyname
