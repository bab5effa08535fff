"""Validators built from the Matrix spec's own OpenAPI definitions and event schemas, kept in
../shared/matrix-spec/data beside this repository. Absent on a user's clone: tests then skip."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "matrix-spec" / "data"


# Every validator's registry retrieves the files its $refs name again on each validation;
# the parsed files are the same each time, so they are read once per test run.
@functools.cache
def _retrieve(uri: str) -> Resource[Any]:
    path = Path(uri.removeprefix("file://"))
    return Resource.from_contents(yaml.safe_load(path.read_text()), DRAFT202012)


@functools.cache
def spec_validator(relative: str) -> Draft202012Validator:
    """A validator for the schema at `relative` under the spec's data/ folder, with its
    relative $refs resolved from the files beside it."""
    path = SPEC_DATA / relative
    if not path.exists():
        pytest.skip(f"the Matrix spec data is not at {SPEC_DATA} (only beside the project repo)")
    schema = yaml.safe_load(path.read_text())
    registry: Registry[Any] = Registry(retrieve=_retrieve)  # type: ignore[call-arg]
    return Draft202012Validator({"$id": path.as_uri(), **schema}, registry=registry)


def assert_valid(relative: str, instance: Any) -> None:
    errors = sorted(spec_validator(relative).iter_errors(instance), key=lambda e: e.path)
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors)


def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@functools.cache
def _response_validator(api: str, path: str, method: str, status: int) -> Draft202012Validator:
    file = SPEC_DATA / "api" / api
    if not file.exists():
        pytest.skip(f"the Matrix spec data is not at {SPEC_DATA} (only beside the project repo)")
    document = yaml.safe_load(file.read_text())
    operation = document["paths"][path][method]
    assert str(status) in operation["responses"], f"{method} {path} never answers {status}"
    uri = file.as_uri()
    registry: Registry[Any] = Registry(retrieve=_retrieve).with_resource(  # type: ignore[call-arg]
        uri, Resource.from_contents(document, DRAFT202012)
    )
    response = operation["responses"][str(status)]
    # A shared response (`$ref: '#/components/responses/rateLimited'`) lives elsewhere.
    parts = (
        response["$ref"].removeprefix("#/").split("/")
        if "$ref" in response
        else ["paths", path, method, "responses", str(status)]
    )
    pointer = _pointer(*parts, "content", "application/json", "schema")
    return Draft202012Validator({"$ref": f"{uri}#{pointer}"}, registry=registry)


def assert_response_valid(api: str, path: str, method: str, status: int, body: Any) -> None:
    """Check a response body against the spec's OpenAPI definition, e.g.
    ("client-server/registration.yaml", "/register", "post", 200, body)."""
    validator = _response_validator(api, path, method, status)
    errors = sorted(validator.iter_errors(body), key=lambda e: e.path)
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors)


def assert_request_valid(api: str, path: str, method: str, body: Any) -> None:
    """A request body (what we send as a client, e.g. to a push gateway) against the
    operation's request schema in the spec's OpenAPI file data/api/`api`."""
    file = SPEC_DATA / "api" / api
    if not file.exists():
        pytest.skip(f"the Matrix spec data is not at {SPEC_DATA} (only beside the project repo)")
    operation = yaml.safe_load(file.read_text())["paths"][path][method]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    registry: Registry[Any] = Registry(retrieve=_retrieve)  # type: ignore[call-arg]
    validator = Draft202012Validator({"$id": file.as_uri(), **schema}, registry=registry)
    errors = sorted(validator.iter_errors(body), key=lambda e: e.path)
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors)
