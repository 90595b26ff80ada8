"""Container health check: exit 0 when the API's liveness endpoint answers 200, else 1.

Run as `python -m service.healthcheck URL`. It imports nothing of the application (fast, and no
Great Expectations/pyspark import-time side effects).
"""

import sys
import urllib.request
from urllib.error import URLError

DEFAULT_URL = "http://127.0.0.1:8000/health"


def check(url: str = DEFAULT_URL, timeout: float = 4.0) -> bool:
    if not url.startswith(("http://127.0.0.1", "http://localhost")):
        raise ValueError("the health check only probes the local server")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (local URL only)
            return bool(response.status == 200)
    except (URLError, OSError):
        return False


def main(argv: list[str]) -> int:
    return 0 if check(argv[1] if len(argv) > 1 else DEFAULT_URL) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
