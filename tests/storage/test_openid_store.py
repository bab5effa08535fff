"""OpenIdStore: a token names its owner until it expires, never after and never for a
deactivated account; issuing a token deletes the expired ones."""

from __future__ import annotations

from homeserver.storage import Storage

NOW = 1_700_000_000_000


async def add_user(storage: Storage, user_id: str) -> None:
    async with storage.db.transaction() as txn:
        assert await storage.accounts.create_user_txn(txn, user_id, None, False, NOW)


async def test_a_token_is_valid_until_it_expires(storage: Storage) -> None:
    await add_user(storage, "@alice:test")
    await storage.openid.add_token("hash-a", "@alice:test", NOW + 1000, NOW)
    assert await storage.openid.get_user_id("hash-a", NOW) == "@alice:test"
    assert await storage.openid.get_user_id("hash-a", NOW + 999) == "@alice:test"
    assert await storage.openid.get_user_id("hash-a", NOW + 1000) is None
    assert await storage.openid.get_user_id("hash-b", NOW) is None


async def test_issuing_a_token_deletes_the_expired_ones(storage: Storage) -> None:
    await add_user(storage, "@alice:test")
    await add_user(storage, "@bob:test")
    await storage.openid.add_token("old", "@alice:test", NOW + 10, NOW)
    await storage.openid.add_token("current", "@alice:test", NOW + 1000, NOW)
    await storage.openid.add_token("new", "@bob:test", NOW + 1010, NOW + 10)
    left = await storage.db.fetch("SELECT token_hash FROM openid_tokens ORDER BY token_hash")
    assert [row["token_hash"] for row in left] == ["current", "new"]


async def test_a_deactivated_account_owns_no_token(storage: Storage) -> None:
    await add_user(storage, "@alice:test")
    await storage.openid.add_token("hash-a", "@alice:test", NOW + 1000, NOW)
    async with storage.db.transaction() as txn:
        await storage.user_data.mark_deactivated_txn(txn, "@alice:test")
    assert await storage.openid.get_user_id("hash-a", NOW) is None
