from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_without_secret_key_refuses_to_start():
    result = manage("check")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


def test_bad_boolean_setting_is_refused():
    result = manage("check", DJANGO_DEBUG="maybe")
    assert result.returncode != 0
    assert "DJANGO_DEBUG must be" in result.stderr


def test_check_deploy_passes_with_production_settings():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SECRET_KEY="x" * 60 + "a-real-looking-production-secret-key",
        DJANGO_ALLOWED_HOSTS="study.example.org",
    )
    assert result.returncode == 0, result.stderr


def _prepare_threshold(**env: str) -> str:
    result = manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.conf import settings;"
        "print(settings.DATABASES['default'].get('OPTIONS', {}).get('prepare_threshold'))",
        DJANGO_DEBUG="1",
        **env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_postgresql_prepares_the_study_statements_unless_told_not_to():
    url = "postgres://postgres@127.0.0.1:5432/test"
    assert _prepare_threshold(DATABASE_URL=url) == "0"
    assert _prepare_threshold(DATABASE_URL=url, DJANGO_DB_PREPARE="0") == "None"
    assert _prepare_threshold(DATABASE_URL="sqlite:///x.sqlite3") == "None"
