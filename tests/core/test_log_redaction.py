"""The redacting log filters are installed when a client is built, once, and not by an import."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import json, logging
from m3ter_provider.core import transport

def counts():
    return {name: sum(isinstance(f, transport.RedactingFilter) for f in logging.getLogger(name).filters)
            for name in transport.REDACTED_LOGGERS}

after_import = counts()
installed_after_import = transport.log_redaction_installed()
from m3ter_provider.core.client import M3terClient
from m3ter_provider.core.config import M3terSettings
from m3ter_provider.core.tokens.cache import TokenCache
settings = M3terSettings.from_connection_fields(
    "c", login="AKID", password="secret", host="http://127.0.0.1:9", extra={"org_id": "o"}
)
M3terClient(settings, token_cache=TokenCache())
M3terClient(settings, token_cache=TokenCache())
print(json.dumps({"after_import": after_import, "installed_after_import": installed_after_import,
                  "after_two_clients": counts(), "installed": transport.log_redaction_installed()}))
"""


def test_importing_the_transport_changes_no_logger_and_each_client_build_installs_the_filters_once():
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(seen["after_import"].values()) == {0}
    assert seen["installed_after_import"] is False
    assert set(seen["after_two_clients"].values()) == {1}  # one filter per logger, however many clients
    assert len(seen["after_two_clients"]) >= 20  # urllib3's, requests', httpx's and ours
    assert seen["installed"] is True
