"""Fixtures for the authorization rule tests: one signing key shared by every test server."""
from __future__ import annotations

from typing import cast

import pytest
from nacl.signing import SigningKey
from signedjson.key import generate_signing_key


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    # signedjson's key is a nacl SigningKey with .alg and .version set, as the builder needs.
    return cast(SigningKey, generate_signing_key("auth"))
