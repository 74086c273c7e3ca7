"""Every package says what it exports, and what it says is importable."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["freshloop", "freshloop.data", "freshloop.monitor", "freshloop.policy", "freshloop.train",
            "freshloop.evaluate", "freshloop.registry", "freshloop.rollout", "freshloop.labels", "freshloop.replay",
            "freshloop.store", "freshloop.api", "freshloop.spec", "freshloop.errors", "freshloop.clock",
            "freshloop.loop"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_declared_and_importable(name: str) -> None:
    mod = importlib.import_module(name)
    assert mod.__doc__ and mod.__doc__.strip(), f"{name} has no docstring"
    exported = getattr(mod, "__all__", None)
    assert exported, f"{name} has no __all__"
    for item in exported:
        assert hasattr(mod, item), f"{name}.__all__ names {item!r}, which it does not define"


def test_every_error_code_has_an_http_status() -> None:
    from freshloop import errors

    for cls in (errors.FreshloopError, errors.SpecError, errors.DataError, errors.NotFoundError,
                errors.ConflictError, errors.IntegrityError):
        assert cls.code in errors.HTTP_STATUS
