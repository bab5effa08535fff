"""X-Matrix request authentication (S-S API "Request Authentication"): the header we send,
the parsing rules of RFC 9110 auth-params, and the checks on the signed request."""

from __future__ import annotations

import pytest
from signedjson.key import generate_signing_key, get_verify_key
from signedjson.sign import sign_json
from signedjson.types import SigningKey, VerifyKey

from federation.auth import (
    RequestAuthenticator,
    Unauthorized,
    XMatrix,
    authorization_header,
    check_signature,
    parse_x_matrix,
    request_json,
)

ORIGIN, DESTINATION = "origin.example", "destination.example"
URI = "/_matrix/federation/v1/send/txn1?x=%20y"
CONTENT = {"pdus": [], "edus": [{"edu_type": "m.typing"}]}


class KnownKeys:
    """The VerifyKeys seam with keys given up front (the keyring's contract, nothing more)."""

    def __init__(self, keys: dict[tuple[str, str], VerifyKey]) -> None:
        self.keys = keys
        self.asked: list[tuple[str, str, int]] = []

    async def get_verify_key(
        self, server_name: str, key_id: str, valid_at_ts: int
    ) -> VerifyKey | None:
        self.asked.append((server_name, key_id, valid_at_ts))
        return self.keys.get((server_name, key_id))


@pytest.fixture
def signing_key() -> SigningKey:
    return generate_signing_key("k1")


def test_header_round_trip_and_spec_json(signing_key: SigningKey) -> None:
    header = authorization_header(ORIGIN, signing_key, DESTINATION, "PUT", URI, CONTENT)
    assert header.startswith('X-Matrix origin="origin.example",destination="destination.example"')
    auth = parse_x_matrix(header)
    assert (auth.origin, auth.destination, auth.key) == (ORIGIN, DESTINATION, "ed25519:k1")
    # The signature is the spec's: sign_json over {method, uri, origin, destination, content}.
    expected = sign_json(
        {
            "method": "PUT",
            "uri": URI,
            "origin": ORIGIN,
            "destination": DESTINATION,
            "content": CONTENT,
        },
        ORIGIN,
        signing_key,
    )["signatures"][ORIGIN]["ed25519:k1"]
    assert auth.sig == expected
    check_signature(auth, "PUT", URI, CONTENT, get_verify_key(signing_key))
    # No body: no content field.
    assert "content" not in request_json("GET", URI, ORIGIN, DESTINATION, None)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # Spaces and tabs around commas and '=', any name case, any order, unknown params.
        (
            'X-Matrix  sig="s" , KEY = "ed25519:k",\torigin=origin.example,extra="x",'
            'destination="d.example"',
            XMatrix("origin.example", "d.example", "ed25519:k", "s"),
        ),
        # Colons in unquoted values (older senders), and backslash escapes in quoted ones.
        (
            'x-matrix origin=host.example:8448,key=ed25519:k,sig="a\\"b\\\\c"',
            XMatrix("host.example:8448", None, "ed25519:k", 'a"b\\c'),
        ),
    ],
)
def test_parsing_follows_rfc_9110(header: str, expected: XMatrix) -> None:
    assert parse_x_matrix(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "Bearer abc",
        "X-Matrix",
        'X-Matrix origin="o",key="ed25519:k"',  # no sig
        'X-Matrix origin="o" key="ed25519:k",sig="s"',  # no comma
        'X-Matrix origin="unterminated,key="k",sig="s"',
    ],
)
def test_malformed_headers_are_unauthorized(header: str) -> None:
    with pytest.raises(Unauthorized) as info:
        parse_x_matrix(header)
    assert (info.value.status, info.value.errcode) == (401, "M_UNAUTHORIZED")


async def test_authenticator_checks_signature_destination_and_key(signing_key: SigningKey) -> None:
    keys = KnownKeys({(ORIGIN, "ed25519:k1"): get_verify_key(signing_key)})
    authenticator = RequestAuthenticator(DESTINATION, keys)
    good = authorization_header(ORIGIN, signing_key, DESTINATION, "PUT", URI, CONTENT)
    assert await authenticator.authenticate("PUT", URI, [good], CONTENT, 1000) == ORIGIN
    assert keys.asked == [(ORIGIN, "ed25519:k1", 1000)]
    # Any one valid header of several will do.
    assert await authenticator.authenticate("PUT", URI, ["junk", good], CONTENT, 1000) == ORIGIN

    failures = {
        "tampered body": ("PUT", URI, [good], {"pdus": ["x"]}),
        "other method": ("POST", URI, [good], CONTENT),
        "other uri": ("PUT", URI + "&z=1", [good], CONTENT),
        "no header": ("PUT", URI, [], CONTENT),
        "for another server": (
            "PUT",
            URI,
            [authorization_header(ORIGIN, signing_key, "else.example", "PUT", URI, CONTENT)],
            CONTENT,
        ),
        "unknown key": (
            "PUT",
            URI,
            [
                authorization_header(
                    ORIGIN, generate_signing_key("k2"), DESTINATION, "PUT", URI, CONTENT
                )
            ],
            CONTENT,
        ),
        "signed by another key under a known ID": (
            "PUT",
            URI,
            [
                authorization_header(
                    ORIGIN, generate_signing_key("k1"), DESTINATION, "PUT", URI, CONTENT
                )
            ],
            CONTENT,
        ),
    }
    for reason, (method, uri, headers, content) in failures.items():
        with pytest.raises(Unauthorized):
            await authenticator.authenticate(method, uri, headers, content, 1000)
            pytest.fail(reason)
