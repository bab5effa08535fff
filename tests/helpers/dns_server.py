"""A tiny authoritative DNS server on 127.0.0.1 (UDP), answering from records the test gives,
built with dnspython's message API: discovery tests run real SRV and A lookups against it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 300


class DnsServer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], tuple[int, list[str]]] = {}
        self.queries: list[tuple[str, str]] = []
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    def add(self, name: str, rdtype: str, *rdatas: str, ttl: int = TTL) -> None:
        """Records in zone-file text: add("hs.test", "A", "127.0.0.1"),
        add("_matrix-fed._tcp.hs.test", "SRV", "10 5 8448 target.test.")."""
        self.records[(name.lower(), rdtype)] = (ttl, list(rdatas))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        owner = question.name
        # Follow CNAMEs the way a recursive resolver does: the chain, then the answer.
        while (name, "CNAME") in self.records and rdtype != "CNAME":
            self._answer(response, owner, name, "CNAME")
            owner = dns.name.from_text(self.records[(name, "CNAME")][1][0])
            name = owner.to_text(omit_final_dot=True).lower()
        if (name, rdtype) in self.records:
            self._answer(response, owner, name, rdtype)
        elif not any(known == name for known, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self._transport is not None
        self._transport.sendto(response.to_wire(), addr)

    def _answer(
        self, response: dns.message.Message, owner: dns.name.Name, name: str, rdtype: str
    ) -> None:
        ttl, rdatas = self.records[(name, rdtype)]
        response.answer.append(
            dns.rrset.from_text_list(owner, ttl, dns.rdataclass.IN, rdtype, rdatas)
        )


@asynccontextmanager
async def dns_server() -> AsyncIterator[DnsServer]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(DnsServer, local_addr=("127.0.0.1", 0))
    server.port = transport.get_extra_info("sockname")[1]
    try:
        yield server
    finally:
        transport.close()
