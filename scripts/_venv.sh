# Shared by scripts/demo and scripts/test: create a venv and install the project into it once.
# M3TER_VENV picks the venv folder (default .venv); M3TER_AIRFLOW adds a pip requirement for Airflow
# itself (e.g. "apache-airflow==2.11.*") to test against another supported Airflow.
# Re-installs when pyproject.toml changed since the last install.
# Installs with uv when there is one (M3TER_UV, else `uv` on PATH, else the one the test extra put in
# .venv): the same packages as pip resolves, in seconds instead of minutes (175 s with pip, 29 s with
# uv's cache cold and 11 s warm for an Airflow 3.1 venv on the development machine), because uv's
# cache keeps wheels unpacked and links them into each venv. Without uv, pip (the first run's case).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${M3TER_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
UV="${M3TER_UV:-$(command -v uv || true)}"
if [ -z "$UV" ] && [ -x "$ROOT/.venv/bin/uv" ]; then
  UV="$ROOT/.venv/bin/uv"
fi
stamp="$VENV/.m3ter-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$(cat "$stamp")" != "${M3TER_AIRFLOW:-}" ]; then
  echo "==> installing airflow-provider-m3ter and its test tools into $VENV ${M3TER_AIRFLOW:+with $M3TER_AIRFLOW }(first run takes a few minutes)"
  # pip's and the build backend's chatter goes to a log, shown only when the install fails
  log="$VENV/pip-install.log"
  : >"$log"
  if [ -n "$UV" ]; then
    install=("$UV" pip install --quiet --python "$VENV/bin/python")
  else
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >>"$log" 2>&1 || { tail -n 60 "$log"; exit 1; }
    install=("$VENV/bin/python" -m pip install --quiet)
  fi
  # shellcheck disable=SC2086
  if ! "${install[@]}" -e "$ROOT[test]" ${M3TER_AIRFLOW:+"$M3TER_AIRFLOW"} >>"$log" 2>&1; then
    tail -n 60 "$log"
    echo "==> installing failed; the whole log: $log" >&2
    exit 1
  fi
  printf '%s' "${M3TER_AIRFLOW:-}" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
"$VENV/bin/python" -c 'import importlib.metadata as m; print("==> Airflow", m.version("apache-airflow"))'
