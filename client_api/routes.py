"""The whole client route table: each module of client_api lists its routes."""

from __future__ import annotations

from aiohttp import web

from client_api import (
    account,
    account_data,
    devices,
    directory,
    discovery,
    ephemeral,
    filters,
    hierarchy,
    key_backup,
    keys,
    openid,
    profile,
    public_rooms,
    room_reads,
    rooms,
    sync,
    to_device,
)


def install_client_routes(router: web.UrlDispatcher) -> None:
    for module in (
        discovery,
        account,
        profile,
        devices,
        account_data,
        ephemeral,
        rooms,
        room_reads,
        directory,
        hierarchy,
        public_rooms,
        filters,
        sync,
        to_device,
        keys,
        key_backup,
        openid,
    ):
        router.add_routes(module.routes())
