"""Imports point inwards (ARCHITECTURE.md, "Three rings"): nothing under homeserver/ except the
composition root (app.py) and the command line (cli.py) may import aiohttp.web or a transport
package. Imports are read with ast, so lazy and TYPE_CHECKING imports count too."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ALLOWED = {"homeserver/app.py", "homeserver/cli.py"}
TRANSPORTS = ("client_api", "federation", "media_repo")


def _forbidden(module: str) -> bool:
    top = module.split(".")[0]
    # aiohttp.web and its implementation modules (aiohttp.web_request, aiohttp.web_response...).
    return top in TRANSPORTS or module == "aiohttp.web" or module.startswith("aiohttp.web")


def forbidden_imports(source: str) -> list[str]:
    """The forbidden modules `source` imports (or reaches as the attribute aiohttp.web)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _forbidden(alias.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if _forbidden(node.module):
                found.append(node.module)
            elif node.module == "aiohttp":
                found += [
                    f"aiohttp.{a.name}" for a in node.names if _forbidden(f"aiohttp.{a.name}")
                ]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "aiohttp"
            and _forbidden(f"aiohttp.{node.attr}")
        ):
            found.append(f"aiohttp.{node.attr}")
    return found


def test_checker_catches_every_import_form() -> None:
    assert forbidden_imports("import aiohttp.web") == ["aiohttp.web"]
    assert forbidden_imports("from aiohttp import web") == ["aiohttp.web"]
    assert forbidden_imports("from aiohttp import ClientSession, web_request") == [
        "aiohttp.web_request"
    ]
    assert forbidden_imports("from aiohttp.web import Response") == ["aiohttp.web"]
    assert forbidden_imports("import aiohttp\nx = aiohttp.web.Response") == ["aiohttp.web"]
    assert forbidden_imports("import client_api.middleware") == ["client_api.middleware"]
    assert forbidden_imports("from federation.server import keys") == ["federation.server"]
    assert forbidden_imports("def f():\n    import media_repo") == ["media_repo"]
    assert forbidden_imports(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from client_api import x"
    ) == ["client_api"]
    # Allowed: the aiohttp client, and names that merely start like a transport.
    assert forbidden_imports("from aiohttp import ClientSession\nimport aiohttp") == []
    assert forbidden_imports("import federation_helpers\nfrom . import federation") == []


def test_homeserver_does_not_import_transports_or_aiohttp_web() -> None:
    violations = []
    for path in sorted((REPO / "homeserver").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel in ALLOWED:
            continue
        for module in forbidden_imports(path.read_text(encoding="utf-8")):
            violations.append(f"{rel} imports {module}")
    assert not violations, "inner ring imports an outer one:\n" + "\n".join(violations)
