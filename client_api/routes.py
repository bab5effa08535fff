"""The whole client route table: each module of client_api lists its routes."""

from __future__ import annotations

from aiohttp import web

from client_api import account, discovery


def install_client_routes(router: web.UrlDispatcher) -> None:
    for module in (discovery, account):
        router.add_routes(module.routes())
