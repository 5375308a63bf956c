"""Container health check: GET one path of the local server; exit 0 on 2xx, 1 otherwise.

    python healthcheck.py [PATH]        (default /v2/health/ready)

The image has no curl. The host and port come from the server's own settings (EMS_HOST,
EMS_PORT, PORT, ... as ``serve`` reads them), so the check follows the port the container
was started with; set the port through the environment, not a flag, when this check is used.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from exasol_mlflow_server.runtime.settings import from_sources

DEFAULT_PATH = "/v2/health/ready"
WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def url_for(path: str) -> str:
    settings = from_sources()
    host = WILDCARDS.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}{path}"


def main(argv: list[str]) -> int:
    url = url_for(argv[0] if argv else DEFAULT_PATH)
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as exc:  # HTTPError (non-2xx) is a URLError
        print(f"unhealthy: GET {url}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
