"""Where media bytes are kept: a small provider interface and the local-disk provider.

Content is addressed by its SHA-256, so identical uploads are stored once. New content is
written to a temporary file first (by the repository, while it hashes), then moved into place
with an atomic rename: a reader never sees a partial file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Protocol

from media_repo.filepaths import content_path, temp_dir

logger = logging.getLogger(__name__)


class MediaStorageProvider(Protocol):
    """Content files by SHA-256. Another backend (object storage) implements the same calls."""

    def new_temp_path(self) -> Path:
        """A fresh path on which to create a new content's temporary file (nothing is
        created); hand the file to store() or delete it."""
        ...

    async def store(self, temp: Path, sha256: str) -> None:
        """Make the finished temporary file the content `sha256`; the temp path is gone after."""
        ...

    async def exists(self, sha256: str) -> bool: ...

    def local_path(self, sha256: str) -> Path:
        """A local file with the content, for the server to read and stream."""
        ...

    async def delete(self, sha256: str) -> None:
        """Remove the content; nothing happens if it is not there."""
        ...

    async def remove_stale_temp_files(self, older_than_s: float) -> int:
        """Delete temporary files older than `older_than_s` (left by a crash: uploads in
        progress, here or in another process, are younger); returns how many."""
        ...


class LocalMediaStorage:
    """Files under `root` (media.path): root/ab/cd/<sha256>, uploads in progress in root/tmp."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._temp = temp_dir(root)

    def new_temp_path(self) -> Path:
        return self._temp / f"{secrets.token_hex(16)}.part"

    async def store(self, temp: Path, sha256: str) -> None:
        await asyncio.to_thread(self._store, temp, content_path(self.root, sha256))

    @staticmethod
    def _store(temp: Path, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        # Even when the content is there already: the rename replaces it with identical bytes,
        # and it restores a file a concurrent delete may have just removed.
        os.replace(temp, final)

    async def exists(self, sha256: str) -> bool:
        return await asyncio.to_thread(content_path(self.root, sha256).is_file)

    def local_path(self, sha256: str) -> Path:
        return content_path(self.root, sha256)

    async def delete(self, sha256: str) -> None:
        await asyncio.to_thread(content_path(self.root, sha256).unlink, missing_ok=True)

    async def remove_stale_temp_files(self, older_than_s: float) -> int:
        return await asyncio.to_thread(self._remove_stale, time.time() - older_than_s)

    def _remove_stale(self, cutoff: float) -> int:
        removed = 0
        try:
            entries = list(os.scandir(self._temp))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except OSError as e:
                logger.warning("cannot remove a stale upload path=%s error=%s", entry.path, e)
        return removed
