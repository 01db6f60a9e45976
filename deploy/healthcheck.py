"""Container health check: exit 0 when the URL (default: the server's /health) answers 2xx.

The slim image has no curl; this uses the standard library only."""

import sys
import urllib.request

url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:5151/health"
try:
    with urllib.request.urlopen(url, timeout=3) as answer:
        sys.exit(0 if 200 <= answer.status < 300 else 1)
except OSError as exc:
    print(f"{url}: {exc}", file=sys.stderr)
    sys.exit(1)
