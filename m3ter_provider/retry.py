"""Kept so ``from m3ter_provider.retry import RetryPolicy`` (shown by earlier READMEs) works.

The retry policy lives in :mod:`m3ter_provider.core.retry`; import from there.
"""

from m3ter_provider.core.retry import RetryPolicy, retry_after_seconds

__all__ = ["RetryPolicy", "retry_after_seconds"]
