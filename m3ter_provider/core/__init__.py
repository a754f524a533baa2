"""The framework-free m3ter client: everything that talks to m3ter, and nothing from Airflow.

- :mod:`.transport` sends one request and checks its answer; :mod:`.retry` is the one retry policy.
- :mod:`.tokens` exchanges, caches and shares bearer tokens (:mod:`.tokens.cache`, the
  process-wide cache; :mod:`.tokens.client`, one client's view of it; :mod:`.tokens.store`, the
  optional file store shared between processes).
- :mod:`.client` is :class:`~m3ter_provider.core.client.M3terClient`, the calls the hook offers;
  :mod:`.paging` pages lists; :mod:`.jobs` is the one table of long-running job kinds;
  :mod:`.download` streams presigned URLs to files.
- :mod:`.ingest` validates, gives uids to, batches and sends measurements, and reads back m3ter's
  ingest validation failures (:mod:`.ingest.failures`).
- :mod:`.config` turns connection fields into settings; :mod:`.limits` holds the light constants
  operators check at DAG-parse time.

The Airflow face (``hooks/``, ``operators/``, ``sensors/``, ``triggers/``, ``links.py``) is built
on this package; import-linter contracts in ``pyproject.toml`` keep the direction one way.
"""
