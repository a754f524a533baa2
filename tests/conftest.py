"""Test set-up: a throwaway AIRFLOW_HOME before Airflow is imported, and a clean token cache per test."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

# Airflow reads its home and config at import: point it at a throwaway folder first, so the tests
# never touch a developer's own Airflow installation.
_HOME = pathlib.Path(tempfile.mkdtemp(prefix="m3ter-provider-tests-"))
_REPO = pathlib.Path(__file__).resolve().parent.parent
#: dag.test() runs only DAGs found in the DAGs folder: the example DAGs and the tests' own DAG files
DAGS_FOLDER = _HOME / "dags"
DAGS_FOLDER.mkdir()
for _source in (_REPO / "example_dags", _REPO / "tests" / "dag_files"):
    for _file in sorted(_source.glob("*.py")) if _source.is_dir() else ():
        shutil.copy(_file, DAGS_FOLDER / _file.name)
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"

import pytest  # noqa: E402

from m3ter_provider.core.tokens.cache import TOKEN_CACHE  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_token_cache():
    """Every test starts with no cached token (the cache is process-wide by design)."""
    TOKEN_CACHE.clear()
    yield
    TOKEN_CACHE.clear()


@pytest.fixture(scope="session")
def airflow_db():
    """Migrate the throwaway AIRFLOW_HOME's SQLite metadata DB once per session (for dag.test())."""
    import subprocess
    import sys

    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    result = subprocess.run([airflow, "db", "migrate"], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return os.environ["AIRFLOW_HOME"]
