"""Egress policy: an instance's endpoint is user-supplied, so the server must not become a proxy into its own
network.

Before every provider request the endpoint's host is resolved (DNS can change between calls) and every
address it resolves to must be public (``ipaddress``'s ``is_global``, not multicast) unless
``VDB_PROVIDER_ALLOW`` allows it: an entry naming the host itself allows all its addresses, an IP or CIDR
entry allows the addresses inside it. Refused: loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7),
link-local (169.254/16 — cloud metadata — and fe80::/10), shared (100.64/10), reserved and unspecified
addresses, and IPv4-mapped IPv6 forms of them. The request is then sent to the address checked here
(``pinned``), never re-resolved, so a DNS answer cannot change between the check and the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from vdb_grpc.errors import FailedPrecondition, PreconditionViolation, Unavailable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SETTING = "VDB_PROVIDER_ALLOW"


def is_public(ip: IPAddress) -> bool:
    """True for addresses on the public internet (IPv4-mapped IPv6 judged by the IPv4 address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class Resolved:
    """Where a request goes: the address checked, for the host named in the endpoint."""

    host: str
    address: str


class EgressPolicy:
    """Which addresses provider requests may go to (``VDB_PROVIDER_ALLOW``)."""

    def __init__(self, allow: Sequence[str] = ()) -> None:
        self._hosts: set[str] = set()
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow:
            entry = entry.strip().strip("[]")
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._hosts.add(entry.lower().rstrip("."))

    def allows(self, host: str, ip: IPAddress) -> bool:
        """Whether a request for ``host`` may go to ``ip``."""
        if host.lower().rstrip(".") in self._hosts:
            return True
        if any(ip.version == n.version and ip in n for n in self._networks):
            return True
        return is_public(ip)

    async def resolve(self, host: str, port: int, instance: str) -> Resolved:
        """Resolve ``host`` and check every address it has; return the first.

        Raises:
            FailedPrecondition: an address is not public and not allowed (naming the instance and the setting).
            Unavailable: the host does not resolve.
        """
        bare = host.strip("[]")
        literal = _literal(bare)
        addresses = [literal] if literal is not None else await _lookup(bare, port, instance)
        for ip in addresses:
            if not self.allows(bare, ip):
                raise FailedPrecondition(
                    f"instance {instance}: its endpoint host {bare} resolves to {ip}, which is not a public address; "
                    f"the server refuses to call it unless {SETTING} allows it (e.g. {SETTING}={bare})",
                    preconditions=[
                        PreconditionViolation(
                            "PROVIDER_EGRESS_REFUSED", f"instance:{instance}", f"{bare} is not allowed by {SETTING}"
                        )
                    ],
                )
        return Resolved(host=bare, address=str(addresses[0]))


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def _lookup(host: str, port: int, instance: str) -> list[IPAddress]:
    """Every address ``host`` resolves to (the system resolver, off the event loop)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        infos = []
    addresses: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise Unavailable(f"the endpoint host of instance {instance} does not resolve")
    return addresses
