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
