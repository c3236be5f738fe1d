"""One progress export through the view, in a process of its own, for its peak memory.

Run by ``manage.py bench``: ``python bench/export_child.py KIND USERNAME`` with the
bench database in DATABASE_URL. Logs the user in with the test client, streams
``/export/KIND.csv`` to the end, and prints JSON: rows, bytes, seconds, and the
process's resident memory before the request and at its peak (VmHWM), in MB.

A process of its own because the peak is a high-water mark: in the bench process it
would be the benchmark's own data, not the export's.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    return float("nan")


def main(kind: str, username: str) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studyapp.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    # Production runs with DEBUG off (no query log), and the test client's host must pass.
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    # Warm the code paths (imports, URL resolver) so the baseline is the app at rest.
    client.get("/healthz")
    baseline = _status_mb("VmRSS")
    start = time.perf_counter()
    response = client.get(f"/export/{kind}.csv")
    lines = size = 0
    for chunk in response.streaming_content:
        lines += chunk.count(b"\n")
        size += len(chunk)
    seconds = time.perf_counter() - start
    return {
        "status": response.status_code,
        "rows": lines - 1,  # less the header
        "bytes": size,
        "seconds": seconds,
        "rss_before_mb": baseline,
        "peak_rss_mb": _status_mb("VmHWM"),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
