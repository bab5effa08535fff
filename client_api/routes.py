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
    moderation,
    openid,
    profile,
    public_rooms,
    push_rules,
    relations,
    room_reads,
    room_summary,
    room_upgrade,
    rooms,
    search,
    sync,
    threepids,
    to_device,
    user_directory,
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
        relations,
        push_rules,
        directory,
        hierarchy,
        room_summary,
        public_rooms,
        filters,
        search,
        sync,
        to_device,
        keys,
        key_backup,
        openid,
        moderation,
        room_upgrade,
        user_directory,
        threepids,
    ):
        router.add_routes(module.routes())
