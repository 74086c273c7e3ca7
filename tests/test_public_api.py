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

    classes = errors.error_classes()
    assert {errors.BusyError, errors.TrainingFailed, errors.AuthError, errors.InvalidValueError} <= set(classes)
    own = [cls.code for cls in classes if "code" in vars(cls)]
    assert len(set(own)) == len(own) >= 16  # each class that says a code says its own
    for cls in classes:
        assert errors.HTTP_STATUS[cls.code] == cls.status and 400 <= cls.status < 600, cls


def test_every_error_freshloop_defines_derives_from_the_root() -> None:
    """Walks every module of the package: an exception class defined anywhere in freshloop is a
    FreshloopError, so the CLI and the HTTP layer answer it the one way (code, status, message)."""
    import inspect
    import pkgutil

    import freshloop
    from freshloop.errors import FreshloopError

    defined = []
    for info in pkgutil.walk_packages(freshloop.__path__, "freshloop."):
        if ".migrations" in info.name:
            continue  # Alembic runs these inside a migration context
        mod = importlib.import_module(info.name)
        defined += [obj for _, obj in inspect.getmembers(mod, inspect.isclass)
                    if issubclass(obj, BaseException) and obj.__module__ == info.name]
    assert len(defined) >= 15 and not [c for c in defined if not issubclass(c, FreshloopError)], defined


def test_error_answers_are_documented_on_every_route() -> None:
    from freshloop.api.app import ERRORS
    from freshloop.errors import error_classes

    for cls in error_classes()[1:]:
        if cls.status < 500:
            assert cls.code in ERRORS[cls.status]["description"], cls
