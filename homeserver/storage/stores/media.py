"""Media metadata and thumbnails of the content repository (C-S API "Content repository").

Rows name their files by SHA-256; the files themselves are media_repo's storage provider's.
"""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.storage.database import Database, Row

_MEDIA_COLUMNS = (
    "server_name, media_id, user_id, content_type, upload_name, size, sha256, created_ts,"
    " last_access_ts, expires_ts, quarantined"
)


@dataclass(frozen=True, slots=True)
class MediaRecord:
    server_name: str
    media_id: str
    user_id: str | None
    content_type: str | None
    upload_name: str | None
    size: int | None
    # None: created by POST /media/v1/create and not uploaded yet.
    sha256: str | None
    created_ts: int
    last_access_ts: int | None
    expires_ts: int | None
    quarantined: bool

    @property
    def pending(self) -> bool:
        return self.sha256 is None


@dataclass(frozen=True, slots=True)
class ThumbnailRecord:
    source_sha256: str
    width: int
    height: int
    method: str
    animated: bool
    content_type: str
    sha256: str
    size: int


def _media(row: Row) -> MediaRecord:
    return MediaRecord(
        server_name=row[0],
        media_id=row[1],
        user_id=row[2],
        content_type=row[3],
        upload_name=row[4],
        size=row[5],
        sha256=row[6],
        created_ts=row[7],
        last_access_ts=row[8],
        expires_ts=row[9],
        quarantined=bool(row[10]),
    )


class MediaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_media(
        self,
        server_name: str,
        media_id: str,
        user_id: str | None,
        content_type: str,
        upload_name: str | None,
        size: int,
        sha256: str,
        now: int,
    ) -> None:
        await self.db.execute(
            "INSERT INTO media (server_name, media_id, user_id, content_type, upload_name, size,"
            " sha256, created_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            server_name,
            media_id,
            user_id,
            content_type,
            upload_name,
            size,
            sha256,
            now,
        )

    async def add_pending(
        self, server_name: str, media_id: str, user_id: str, now: int, expires_ts: int
    ) -> None:
        await self.db.execute(
            "INSERT INTO media (server_name, media_id, user_id, created_ts, expires_ts)"
            " VALUES ($1, $2, $3, $4, $5)",
            server_name,
            media_id,
            user_id,
            now,
            expires_ts,
        )

    async def count_pending(self, user_id: str, now: int) -> int:
        """The user's created media IDs that are neither uploaded nor expired."""
        count = await self.db.fetchval(
            "SELECT COUNT(*) FROM media WHERE user_id = $1 AND sha256 IS NULL AND expires_ts > $2",
            user_id,
            now,
        )
        return int(count)

    async def delete_expired_pending(self, now: int, user_id: str | None = None) -> None:
        """Forget created media IDs whose upload time has passed (one user's, or everyone's)."""
        if user_id is None:
            await self.db.execute(
                "DELETE FROM media WHERE sha256 IS NULL AND expires_ts <= $1", now
            )
        else:
            await self.db.execute(
                "DELETE FROM media WHERE user_id = $1 AND sha256 IS NULL AND expires_ts <= $2",
                user_id,
                now,
            )

    async def fill_pending(
        self,
        server_name: str,
        media_id: str,
        content_type: str,
        upload_name: str | None,
        size: int,
        sha256: str,
        now: int,
    ) -> bool:
        """Give a created media ID its content. False when it has content already or has gone
        (a concurrent upload to the same ID won, or it expired and was purged)."""
        rows = await self.db.fetch(
            "UPDATE media SET content_type = $3, upload_name = $4, size = $5, sha256 = $6,"
            " created_ts = $7, expires_ts = NULL"
            " WHERE server_name = $1 AND media_id = $2 AND sha256 IS NULL RETURNING media_id",
            server_name,
            media_id,
            content_type,
            upload_name,
            size,
            sha256,
            now,
        )
        return bool(rows)

    async def get_media(self, server_name: str, media_id: str) -> MediaRecord | None:
        row = await self.db.fetchrow(
            f"SELECT {_MEDIA_COLUMNS} FROM media WHERE server_name = $1 AND media_id = $2",
            server_name,
            media_id,
        )
        return None if row is None else _media(row)

    async def touch(self, server_name: str, media_id: str, now: int) -> None:
        await self.db.execute(
            "UPDATE media SET last_access_ts = $3 WHERE server_name = $1 AND media_id = $2",
            server_name,
            media_id,
            now,
        )

    async def set_quarantined(self, server_name: str, media_id: str, quarantined: bool) -> bool:
        """False when there is no such media."""
        rows = await self.db.fetch(
            "UPDATE media SET quarantined = $3 WHERE server_name = $1 AND media_id = $2"
            " RETURNING media_id",
            server_name,
            media_id,
            quarantined,
        )
        return bool(rows)

    async def delete_media(self, server_name: str, media_id: str) -> MediaRecord | None:
        """Delete the row; returns it, or None when there was none."""
        row = await self.db.fetchrow(
            "DELETE FROM media WHERE server_name = $1 AND media_id = $2"
            f" RETURNING {_MEDIA_COLUMNS}",
            server_name,
            media_id,
        )
        return None if row is None else _media(row)

    async def media_uses(self, sha256: str) -> bool:
        """Whether any media row has this content."""
        found = await self.db.fetchval("SELECT 1 FROM media WHERE sha256 = $1 LIMIT 1", sha256)
        return found is not None

    async def file_in_use(self, sha256: str) -> bool:
        """Whether any media or thumbnail row names the file `sha256`."""
        if await self.media_uses(sha256):
            return True
        found = await self.db.fetchval(
            "SELECT 1 FROM media_thumbnails WHERE sha256 = $1 LIMIT 1", sha256
        )
        return found is not None

    # -- thumbnails --------------------------------------------------------------------------

    async def get_thumbnails(self, source_sha256: str) -> list[ThumbnailRecord]:
        rows = await self.db.fetch(
            "SELECT source_sha256, width, height, method, animated, content_type, sha256, size"
            " FROM media_thumbnails WHERE source_sha256 = $1",
            source_sha256,
        )
        return [
            ThumbnailRecord(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7]) for r in rows
        ]

    async def add_thumbnail(self, thumbnail: ThumbnailRecord, now: int) -> None:
        """Record a thumbnail; a concurrent one of the same spec that got there first stays."""
        await self.db.execute(
            "INSERT INTO media_thumbnails (source_sha256, width, height, method, animated,"
            " content_type, sha256, size, created_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT DO NOTHING",
            thumbnail.source_sha256,
            thumbnail.width,
            thumbnail.height,
            thumbnail.method,
            thumbnail.animated,
            thumbnail.content_type,
            thumbnail.sha256,
            thumbnail.size,
            now,
        )

    async def delete_thumbnails(self, source_sha256: str) -> list[str]:
        """Forget every thumbnail of a content; returns their files' hashes."""
        rows = await self.db.fetch(
            "DELETE FROM media_thumbnails WHERE source_sha256 = $1 RETURNING sha256",
            source_sha256,
        )
        return sorted({r[0] for r in rows})
