"""`homeserver register-user`: create an account from the command line, beside a running server
or without one.

It opens the database with `open_database` and never claims the single-writer lock (see
storage/README.md): creating a user writes one row of `users` and allocates no stream position
or state group, so it is safe while the server runs (SQLite serialises the write; PostgreSQL
takes it as any client's). Migrations are applied as at start-up, which is a no-op on a schema
the server has already brought up to date.
"""

from __future__ import annotations

import asyncio
import re
import time

from argon2 import PasswordHasher

from homeserver.config import Config
from homeserver.identifiers import MAX_ID_BYTES
from homeserver.storage import DatabaseUnavailable, SchemaTooNew, open_database
from homeserver.storage.migrations import apply_migrations
from homeserver.storage.stores.accounts import AccountsStore

# The localparts /register hands out (C-S API "User Identifiers").
_LOCALPART = re.compile(r"[a-z0-9._=\-/+]+\Z")


class RegisterUserError(Exception):
    """Why the account was not created; str() is one line for the operator."""


def user_id_for(user: str, server_name: str) -> str:
    """`user` as a full user ID on this server: a localpart, or an ID naming this server."""
    if user.startswith("@"):
        localpart, _, domain = user[1:].partition(":")
        if domain != server_name:
            raise RegisterUserError(f"{user} is not a user ID on this server ({server_name})")
    else:
        localpart = user
    if not _LOCALPART.match(localpart):
        raise RegisterUserError(
            f"invalid user name {localpart!r}: use only a-z, 0-9 and the characters ._=-/+"
        )
    user_id = f"@{localpart}:{server_name}"
    if len(user_id.encode()) > MAX_ID_BYTES:
        raise RegisterUserError(f"{user_id} is longer than {MAX_ID_BYTES} bytes")
    return user_id


async def register_user(config: Config, user: str, password: str, admin: bool) -> str:
    """Create the account; returns its user ID. Raises RegisterUserError."""
    user_id = user_id_for(user, config.server_name)
    # argon2id with the parameters AuthHandler uses, so login verifies it the same way.
    password_hash = await asyncio.to_thread(PasswordHasher().hash, password)
    try:
        db = await open_database(config.database)
    except (DatabaseUnavailable, OSError) as e:
        raise RegisterUserError(f"cannot open the database: {e}") from None
    try:
        await apply_migrations(db)
        async with db.transaction() as txn:
            created = await AccountsStore(db).create_user_txn(
                txn, user_id, password_hash, admin, int(time.time() * 1000)
            )
    except SchemaTooNew as e:
        raise RegisterUserError(str(e)) from None
    finally:
        await db.close()
    if not created:
        raise RegisterUserError(f"{user_id} already exists")
    return user_id
