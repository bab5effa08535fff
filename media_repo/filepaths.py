"""Names and paths of the content repository: mxc:// URIs, media IDs, file names, and where a
content's file lives (C-S API "Content repository", "Security considerations").

Files are named by their SHA-256 alone, so nothing a client sends ever becomes part of a path;
media IDs and server names are still checked against a whitelist, as the spec requires.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from homeserver.identifiers import is_valid_server_name

# Spec: "alphanumeric (A-Za-z0-9), _ and - characters" (URL-safe base64).
_MEDIA_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,255}\Z")
_SHA256_RE = re.compile(r"[0-9a-f]{64}\Z")
# C0 controls and DEL: never meaningful in a file name, and dangerous in a header.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_UPLOAD_NAME_LENGTH = 255

TEMP_DIR = "tmp"


def is_valid_media_id(media_id: str) -> bool:
    return _MEDIA_ID_RE.match(media_id) is not None


def new_media_id() -> str:
    """24 random characters of [A-Za-z0-9_-] (144 bits)."""
    return secrets.token_urlsafe(18)


def is_valid_upload_name(name: str) -> bool:
    """A file name a client may give (upload `filename`, download `{fileName}`): it is only
    ever echoed in Content-Disposition, so anything printable of sane length."""
    return 0 < len(name) <= MAX_UPLOAD_NAME_LENGTH and _CONTROL_RE.search(name) is None


def mxc_uri(server_name: str, media_id: str) -> str:
    return f"mxc://{server_name}/{media_id}"


def parse_mxc(uri: str) -> tuple[str, str]:
    """(server name, media ID) of an mxc:// URI; ValueError naming the problem otherwise."""
    if not uri.startswith("mxc://"):
        raise ValueError(f"{uri!r} is not an mxc:// URI")
    server_name, sep, media_id = uri[len("mxc://") :].partition("/")
    if not sep or not is_valid_server_name(server_name):
        raise ValueError(f"{uri!r} does not name a valid server")
    if not is_valid_media_id(media_id):
        raise ValueError(f"{uri!r} does not end in a valid media ID (A-Z, a-z, 0-9, _ and -)")
    return server_name, media_id


def content_path(root: Path, sha256: str) -> Path:
    """Where the content with this SHA-256 (lower-case hex) lives: root/ab/cd/abcd...; two
    levels of 256 directories keep each directory small."""
    if _SHA256_RE.match(sha256) is None:
        # Hashes come from our own hashing or our own rows: anything else is a bug.
        raise ValueError("not a lower-case hex SHA-256")
    return root / sha256[0:2] / sha256[2:4] / sha256


def temp_dir(root: Path) -> Path:
    """Uploads in progress: under the media root, so moving one into place is a rename on the
    same filesystem."""
    return root / TEMP_DIR
