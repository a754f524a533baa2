"""Test set-up: a throwaway AIRFLOW_HOME before Airflow is imported, and a clean token cache per test."""

from __future__ import annotations

import os
import tempfile

# Airflow reads its home and config at import: point it at a throwaway folder first, so the tests
# never touch a developer's own Airflow installation.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="m3ter-provider-tests-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(os.path.dirname(__file__), "..", "example_dags")

import pytest  # noqa: E402

from m3ter_provider.auth import TOKEN_CACHE  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_token_cache():
    """Every test starts with no cached token (the cache is process-wide by design)."""
    TOKEN_CACHE.clear()
    yield
    TOKEN_CACHE.clear()
