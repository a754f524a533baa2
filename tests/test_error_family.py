"""Every public exception the provider raises is defined in m3ter_provider.errors, in one family."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import m3ter_provider
from m3ter_provider import errors


def provider_modules():
    for info in pkgutil.walk_packages(m3ter_provider.__path__, "m3ter_provider."):
        if info.name == "m3ter_provider.errors" or info.name.startswith("m3ter_provider.testing"):
            continue  # the emulator has its own (stdlib-only) errors: it imports nothing of the provider
        yield importlib.import_module(info.name)


def test_every_public_exception_class_lives_in_errors_py():
    elsewhere = [
        f"{module.__name__}.{name}"
        for module in provider_modules()
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == module.__name__
        and not name.startswith("_")  # private control flow (a deadline passed, a body cut off)
    ]
    assert elsewhere == []


def test_every_exception_in_errors_py_is_an_m3ter_error():
    classes = [v for v in vars(errors).values() if inspect.isclass(v) and issubclass(v, BaseException)]
    assert len(classes) >= 15
    assert all(issubclass(cls, errors.M3terError) for cls in classes)


def test_the_old_import_path_of_the_ingest_failure_errors_still_works():
    from m3ter_provider.core.ingest.failures import M3terIngestCheckError, M3terIngestRejectedError

    assert M3terIngestRejectedError is errors.M3terIngestRejectedError
    assert M3terIngestCheckError is errors.M3terIngestCheckError
