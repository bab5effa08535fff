"""OutboundAddressPolicy: which IP addresses the server may open connections to when a
remote party chose the destination (a federation server name, a pusher's gateway URL)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Never the destination of an outbound connection, whatever is_global says on this Python
# version: shared address space (CGNAT, RFC 6598) and the IPv6 ranges below are not globally
# routable either.
_REFUSED_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("fc00::/7"),  # unique local
    ipaddress.ip_network("fec0::/10"),  # site local (deprecated)
)


class OutboundAddressPolicy:
    """Outbound connections never reach private, loopback, link-local, CGNAT, multicast or
    reserved addresses, so a name chosen by someone else cannot point us at the inside of our
    own network; except the configured allowed ranges (tests, private deployments)."""

    def __init__(self, allowed_ranges: Iterable[str] = ()) -> None:
        self.allowed = [ipaddress.ip_network(cidr, strict=False) for cidr in allowed_ranges]

    def is_allowed(self, address: str) -> bool:
        ip: IPAddress = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            # ::ffff:a.b.c.d reaches a.b.c.d: judge it as that address.
            ip = ip.ipv4_mapped
        if any(ip in network for network in self.allowed):
            return True
        return not (
            not ip.is_global
            or ip.is_private
            or ip.is_loopback
            or ip.is_link_local
            or ip.is_multicast
            or ip.is_unspecified
            or ip.is_reserved
            or any(ip in network for network in _REFUSED_NETWORKS)
        )
