"""Permanent errors fail the task at once; transient ones keep Airflow's retries (the Airflow side).

The core decides (``M3terError.permanent``: refused credentials, bad configuration, invalid input,
4xx answers other than 408/409/425/429); this module only makes Airflow act on it. A permanent
error is re-raised as an instance of a class deriving from both its own class and Airflow's
``AirflowFailException``, which every supported Airflow (2.11, 3.x) fails without retrying, and
which Airflow 3.3's ``retry_policy`` is never asked about. ``except M3terValidationError`` (or any
class of the family) in user code still catches it; its message, attributes and cause are the same.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from m3ter_provider.errors import M3terError

F = TypeVar("F", bound=Callable[..., Any])


#: error class -> the class that is both it and ``AirflowFailException``
_FAIL_FAST_CLASSES: dict[type[M3terError], type[M3terError]] = {}


def fail_fast_class(cls: type[M3terError]) -> type[M3terError]:
    """``cls`` joined with ``AirflowFailException`` (one class per error class, made once)."""
    made = _FAIL_FAST_CLASSES.get(cls)
    if made is None:
        made = _FAIL_FAST_CLASSES.setdefault(cls, _join_with_fail_exception(cls))
    return made


def _join_with_fail_exception(cls: type[M3terError]) -> type[M3terError]:
    from airflow.providers.common.compat.sdk import AirflowFailException

    if issubclass(cls, AirflowFailException):
        return cls
    return type(
        cls.__name__,
        (cls, AirflowFailException),
        {
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__str__": cls.__str__,  # the family's message, whatever AirflowException's MRO brings
            "__reduce__": _reduce,
            "__doc__": f"{cls.__doc__ or ''}\n\nPermanent: fails the Airflow task without retrying.",
        },
    )


def _reduce(self: M3terError) -> tuple[Any, ...]:
    """Pickle as the family's class (importable by name) and join Airflow's class again on load."""
    return _rebuild, (type(self).__mro__[1], self.args, dict(self.__dict__))


def _rebuild(cls: type[M3terError], args: tuple[Any, ...], state: dict[str, Any]) -> M3terError:
    twin = fail_fast_class(cls).__new__(fail_fast_class(cls))
    twin.args = args
    twin.__dict__.update(state)
    return twin


def fail_fast(error: M3terError) -> M3terError:
    """``error`` as an ``AirflowFailException`` too when it is permanent; else ``error`` itself."""
    if not getattr(error, "permanent", False):
        return error
    cls = fail_fast_class(type(error))
    if cls is type(error):
        return error
    twin = cls.__new__(cls)
    twin.__dict__.update(error.__dict__)
    twin.args = error.args
    twin.__cause__ = error.__cause__
    twin.__context__ = error.__context__
    twin.__suppress_context__ = error.__suppress_context__
    twin.__traceback__ = error.__traceback__
    notes = getattr(error, "__notes__", None)
    if notes:
        setattr(twin, "__notes__", list(notes))  # noqa: B010 - exceptions type __notes__ from 3.11
    return twin


@contextlib.contextmanager
def permanent_errors_fail_the_task() -> Iterator[None]:
    """Re-raise a permanent :class:`M3terError` raised inside as one Airflow does not retry."""
    try:
        yield
    except M3terError as error:
        twin = fail_fast(error)
        if twin is error:
            raise
        raise twin.with_traceback(error.__traceback__) from error.__cause__


def fails_fast(method: F) -> F:
    """Decorate a hook or operator method: its permanent errors fail the task without a retry."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with permanent_errors_fail_the_task():
            return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
