"""Request authentication between servers (S-S API "Request Authentication"): the X-Matrix
Authorization header, made for outbound requests and checked on inbound ones.

The signed object is {method, uri, origin, destination, content}; `uri` is the request
target as sent (path and query, still percent-encoded), `content` the parsed JSON body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from signedjson.sign import SignatureVerifyException, sign_json, verify_signed_json
from signedjson.types import SigningKey, VerifyKey

from homeserver.errors import Codes, MatrixError

JsonDict = dict[str, Any]
SCHEME = "X-Matrix"


class Unauthorized(MatrixError):
    """401 M_UNAUTHORIZED: the spec's answer to a request that fails authentication."""

    errcode = Codes.UNAUTHORIZED


@dataclass(frozen=True, slots=True)
class XMatrix:
    origin: str
    destination: str | None
    key: str
    sig: str


def authorization_header(
    origin: str,
    signing_key: SigningKey,
    destination: str,
    method: str,
    uri: str,
    content: Any = None,
) -> str:
    """The Authorization header value for an outbound request. Written the way the spec asks
    senders to for older servers: one space after the scheme, lower-case names, no spaces
    around commas."""
    signed = sign_json(
        request_json(method, uri, origin, destination, content), origin, signing_key
    )
    key_id = f"{signing_key.alg}:{signing_key.version}"
    sig = signed["signatures"][origin][key_id]
    return (
        f'{SCHEME} origin="{origin}",destination="{destination}",key="{key_id}",sig="{sig}"'
    )


def request_json(
    method: str, uri: str, origin: str, destination: str | None, content: Any
) -> JsonDict:
    body: JsonDict = {"method": method, "uri": uri, "origin": origin}
    if destination is not None:
        body["destination"] = destination
    if content is not None:
        body["content"] = content
    return body


# RFC 9110 auth-param: name = ( token / quoted-string ); colons are accepted in unquoted
# values too, as the spec asks for older senders.
_PARAM = re.compile(
    r'[ \t]*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*'
    r'(?:"((?:[^"\\]|\\.)*)"|([!#$%&\'*+.^_`|~0-9A-Za-z:-]+))[ \t]*(?:,|\Z)',
    re.DOTALL,
)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def parse_x_matrix(header: str) -> XMatrix:
    """An X-Matrix Authorization header value; 401 M_UNAUTHORIZED for anything else."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != SCHEME.lower():
        raise Unauthorized("Not an X-Matrix Authorization header")
    values: dict[str, str] = {}
    pos = 0
    params = params.strip()
    while pos < len(params):
        match = _PARAM.match(params, pos)
        if match is None or match.end() == pos:
            raise Unauthorized("Malformed X-Matrix Authorization header")
        name, quoted, token = match.groups()
        value = _ESCAPE.sub(r"\1", quoted) if quoted is not None else token
        values.setdefault(name.lower(), value)  # the first of a repeated name counts
        pos = match.end()
    try:
        return XMatrix(values["origin"], values.get("destination"), values["key"], values["sig"])
    except KeyError as e:
        raise Unauthorized(f"X-Matrix Authorization header has no {e.args[0]}") from None


def check_signature(
    auth: XMatrix, method: str, uri: str, content: Any, verify_key: VerifyKey
) -> None:
    """Whether `auth.sig` signs the request; 401 M_UNAUTHORIZED when it does not."""
    signed = request_json(method, uri, auth.origin, auth.destination, content)
    signed["signatures"] = {auth.origin: {auth.key: auth.sig}}
    try:
        verify_signed_json(signed, auth.origin, verify_key)
    except SignatureVerifyException:
        raise Unauthorized("Invalid signature on the request") from None


class VerifyKeys(Protocol):
    """A server's verify key by ID, valid at least until `valid_at_ts` (the keyring)."""

    async def get_verify_key(
        self, server_name: str, key_id: str, valid_at_ts: int
    ) -> VerifyKey | None: ...


class RequestAuthenticator:
    """Checks inbound federation requests: returns the origin server they came from."""

    def __init__(self, server_name: str, keys: VerifyKeys) -> None:
        self.server_name = server_name
        self.keys = keys

    async def authenticate(
        self, method: str, uri: str, authorizations: Iterable[str], content: Any, now_ms: int
    ) -> str:
        """The origin of a request that carries a valid X-Matrix signature; any one of
        several Authorization headers may be the valid one."""
        failure: MatrixError = Unauthorized("Missing X-Matrix Authorization header")
        for header in authorizations:
            try:
                auth = parse_x_matrix(header)
                if auth.destination is not None and auth.destination != self.server_name:
                    raise Unauthorized("The request is for another server")
                verify_key = await self.keys.get_verify_key(auth.origin, auth.key, now_ms)
                if verify_key is None:
                    raise Unauthorized(f"No key {auth.key} known for {auth.origin}")
                check_signature(auth, method, uri, content, verify_key)
                return auth.origin
            except MatrixError as e:
                failure = e
        raise failure

