"""User directory search (C-S API "User directory", POST /user_directory/search): the users
who share a room with the searcher and the members of public or world-readable rooms, or with
`search_all_users` every local account as well.

Served from the user_directory table, which an EventIndexer keeps in step with member,
join-rule and history-visibility events as they are stored, joined against the rooms'
current membership at query time: a search is one indexed query, and no background job has
to catch up after joins, leaves or profile changes (profile changes reach the directory
through the member events they send)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homeserver.storage.stores.user_directory import UserDirectoryStore

DEFAULT_LIMIT = 10
# Large enough for any type-ahead, small enough that one request stays cheap.
MAX_LIMIT = 100


@dataclass(frozen=True)
class DirectorySearchResult:
    results: list[dict[str, Any]]
    limited: bool


class UserDirectoryHandler:
    def __init__(self, store: UserDirectoryStore, *, search_all_users: bool = False) -> None:
        self.store = store
        self.search_all_users = search_all_users

    async def search(self, searcher: str, term: str, limit: int) -> DirectorySearchResult:
        limit = max(0, min(limit, MAX_LIMIT))
        term = term.strip()
        if not term:
            return DirectorySearchResult([], False)
        # One more than asked tells whether the list was cut short.
        entries = await self.store.search(
            searcher, term, limit + 1, all_local_users=self.search_all_users
        )
        results = []
        for entry in entries[:limit]:
            result: dict[str, Any] = {"user_id": entry.user_id}
            if entry.display_name is not None:
                result["display_name"] = entry.display_name
            # Remote member events can carry anything; only an mxc:// URI is an avatar.
            if entry.avatar_url is not None and entry.avatar_url.startswith("mxc://"):
                result["avatar_url"] = entry.avatar_url
            results.append(result)
        return DirectorySearchResult(results, len(entries) > limit)
