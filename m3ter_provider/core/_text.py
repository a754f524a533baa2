"""Small text helpers for log lines and messages (no Airflow import)."""

from __future__ import annotations


def plural(count: int, word: str, plural_word: str | None = None) -> str:
    """``"1 bill"``, ``"3 bills"``, ``"12,000 measurements"``: a count with its noun in the right number.

    :param plural_word: the plural where adding ``s`` is wrong (``"entries"``).
    """
    noun = word if count == 1 else (plural_word or f"{word}s")
    return f"{count:,} {noun}"
