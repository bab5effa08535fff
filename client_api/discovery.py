"""Discovery (C-S API "Server discovery", "API standards" versions, "Capabilities")."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, ok, requester
from homeserver.events.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS

# The spec versions whose client endpoints we serve; clients pick features by these. Element
# and other clients use the authenticated media endpoints only from v1.11 on (and the legacy
# ones are off by default here), so v1.7-v1.11 are listed now that media is served.
SPEC_VERSIONS = [f"v1.{minor}" for minor in range(1, 12)]


async def versions(_request: web.Request) -> web.Response:
    return ok({"versions": SPEC_VERSIONS, "unstable_features": UNSTABLE_FEATURES})


# MSCs served under their unstable prefixes, which clients look for here before using them.
UNSTABLE_FEATURES = {"org.matrix.msc3814": True}


async def well_known_client(request: web.Request) -> web.Response:
    base = core_of(request).public_baseurl or f"{request.scheme}://{request.host}"
    return ok({"m.homeserver": {"base_url": base.rstrip("/") + "/"}})


async def capabilities(request: web.Request) -> web.Response:
    await requester(request)
    core = core_of(request)
    return ok(
        {
            "capabilities": {
                "m.room_versions": {
                    "default": DEFAULT_ROOM_VERSION.identifier,
                    "available": {v: "stable" for v in KNOWN_ROOM_VERSIONS},
                },
                "m.change_password": {"enabled": True},
                "m.set_displayname": {"enabled": True},
                "m.set_avatar_url": {"enabled": True},
                "m.3pid_changes": {"enabled": core.threepids.can_add_email},
                "m.get_login_token": {"enabled": False},
            }
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/_matrix/client/versions", versions),
        web.get("/.well-known/matrix/client", well_known_client),
        web.get("/_matrix/client/v3/capabilities", capabilities),
    ]
