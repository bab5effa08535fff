-- The content repository (C-S API "Content repository"): media metadata and thumbnails.
-- The bytes live in files named by their SHA-256 (media_repo/storage_backend.py), so rows that
-- share a sha256 share one file; a file is removed once no row of either table names it.

-- One row per mxc://server_name/media_id. sha256 NULL: an ID made by POST /media/v1/create
-- whose content has not been uploaded yet; it expires at expires_ts (unused_expires_at).
-- Quarantined media stay on disk but are served to nobody.
CREATE TABLE media (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    user_id TEXT,
    content_type TEXT,
    upload_name TEXT,
    size BIGINT,
    sha256 TEXT,
    created_ts BIGINT NOT NULL,
    last_access_ts BIGINT,
    expires_ts BIGINT,
    quarantined BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (server_name, media_id)
);
-- Whether a file is still used by another upload (delete).
CREATE INDEX media_sha256 ON media (sha256);
-- A user's pending uploads (the limit on concurrent ones) and the purge of expired ones.
CREATE INDEX media_pending ON media (user_id, expires_ts) WHERE sha256 IS NULL;

-- Thumbnails belong to the content, not to one upload: identical uploads share them. The key
-- is what was asked for (width, height, method, animated); the file may be smaller, since
-- thumbnails are never larger than their source.
CREATE TABLE media_thumbnails (
    source_sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    animated BOOLEAN NOT NULL,
    content_type TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (source_sha256, width, height, method, animated)
);
-- Whether a thumbnail's file is still used (delete).
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256);
