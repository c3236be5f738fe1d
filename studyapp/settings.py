"""StudyApp settings: one file, configured from environment variables.

Runs with no configuration for development (``DJANGO_DEBUG=1``); with debug off it
refuses to start without a secret key.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be 1/0, true/false, yes/no or on/off, not {value!r}")


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it to a long random string, "
            "or set DJANGO_DEBUG=1 for local development."
        )
    SECRET_KEY = "django-insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# Lets the login page offer sign-up; invite-only classes turn it off.
SIGNUP_ENABLED = env_bool("STUDYAPP_SIGNUP_ENABLED", True)

# FSRS adds a little randomness to review intervals so cards learnt together spread out;
# tests switch it off to get exact intervals.
STUDYAPP_FSRS_FUZZ = env_bool("STUDYAPP_FSRS_FUZZ", True)

# Deck files larger than this, or with more cards, are refused with a clear message.
STUDYAPP_MAX_IMPORT_BYTES = int(os.environ.get("STUDYAPP_MAX_IMPORT_BYTES", 10 * 1024 * 1024))
STUDYAPP_MAX_IMPORT_CARDS = int(os.environ.get("STUDYAPP_MAX_IMPORT_CARDS", 200_000))
# Anki packages carry images and years of history, so they may be larger.
STUDYAPP_MAX_PACKAGE_BYTES = int(os.environ.get("STUDYAPP_MAX_PACKAGE_BYTES", 200 * 1024 * 1024))

# A student's own memory model is fitted once they have this much history.
STUDYAPP_FIT_MIN_REVIEWS = int(os.environ.get("STUDYAPP_FIT_MIN_REVIEWS", "400"))
STUDYAPP_FIT_MIN_CARDS = int(os.environ.get("STUDYAPP_FIT_MIN_CARDS", "50"))
# Fits of histories up to this size run in the request; larger ones are queued for
# `manage.py fit_memory_model --pending` (e.g. nightly from cron).
STUDYAPP_FIT_IN_REQUEST_MAX_REVIEWS = int(
    os.environ.get("STUDYAPP_FIT_IN_REQUEST_MAX_REVIEWS", "20000")
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "csp",
    "axes",
    "decks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    "decks.middleware.DatabaseUnavailableMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "studyapp.backends.UserBackend",  # ModelBackend, its per-request lookup in raw SQL
]

# Login throttling (django-axes): 5 failures for a username or from an address within
# 15 minutes lock further attempts for 15 minutes. Attempts live in the database, so every
# app server sees them.
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_USE_ATTEMPT_EXPIRATION = True
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_RESET_ON_SUCCESS = True

# Content-Security-Policy (django-csp): our own scripts and styles only, no eval; the
# nonce is there for any inline script a template may need.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF],
        "img-src": [SELF, "https:", "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# The shared cache (sign-up rate limit) lives in the database, so every app server sees
# the same counts without another service to run.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "studyapp_cache",
    }
}
# Sign-ups allowed from one address per hour.
SIGNUP_RATE_PER_HOUR = int(os.environ.get("STUDYAPP_SIGNUP_RATE_PER_HOUR", "5"))

ROOT_URLCONF = "studyapp.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "studyapp.context_processors.site",
            ],
        },
    },
]

WSGI_APPLICATION = "studyapp.wsgi.application"

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DJANGO_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers carry on while a rating is written; IMMEDIATE takes the write lock
    # at the start of a transaction so two writers queue instead of failing mid-way.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
    "DJANGO_DB_PREPARE", default=True
):
    # Only the study step's statements (decks.rawsql.prepared_cursor) are prepared, on
    # their first run in a connection; the ORM's client-side cursors never are. Behind a
    # pooler in transaction mode (PgBouncer), set DJANGO_DB_PREPARE=0.
    # They are also planned once (decks.rawsql.plan_prepared_once).
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 0

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

SESSION_ENGINE = "studyapp.sessions"  # database sessions, read with the user in one statement

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
# The app is written in English only; without the translation machinery every value a
# template prints skips a language lookup (a tenth of a study request's template time).
USE_I18N = False
USE_TZ = True

# Images from imported Anki packages. On several app servers, point default storage at a
# shared bucket instead (django-storages, e.g. S3); see the README.
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("DJANGO_MEDIA_ROOT", BASE_DIR / "media"))

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Manifest storage needs collectstatic, so only production uses it.
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Uploads larger than this stream to a temporary file; the importer caps deck files itself.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
