"""Settings for the hub, read from the environment (see .env.example for every variable)."""

import re
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A .env file next to manage.py is optional; the real environment wins over it.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)



def env_number(name, default, *, low, high=None, cast=int):
    """A number from the environment, refused at start-up (naming the variable) when it is not
    one or lies outside [low, high]: a retention of 0 days would delete every probe log, a
    negative row limit would fail every export."""
    raw = env.str(name, default="").strip()
    if not raw:
        return default
    pattern = r"[+-]?[0-9]+" if cast is int else r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
    if not re.fullmatch(pattern, raw):  # int() and float() also take 1_000, full-width digits, nan
        kind = "a whole number" if cast is int else "a number"
        raise ImproperlyConfigured(f"{name}={raw!r} is not {kind} (see .env.example).")
    value = cast(raw)
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise ImproperlyConfigured(f"{name}={raw} is out of range: it must be {bounds}.")
    return value


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="" if not DEBUG else "insecure-debug-only-key")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY is not set (see .env.example).")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "accounts",
    "monitoring",
    "exports",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "hub.middleware.RejectNulMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "hub.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "hub.urls"
WSGI_APPLICATION = "hub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# PostgreSQL is required: the usage log is a large indexed table and backups are pg_dump.
# Any libpq URL works (socket hosts, percent-encoded credentials, ?sslmode=...).
DATABASES = {"default": env.db("DATABASE_URL")}
# django-environ leaves a percent-encoded socket directory (%2Fvar%2Frun%2Fpostgresql) as is.
if "%" in str(DATABASES["default"].get("HOST") or ""):
    from urllib.parse import unquote

    DATABASES["default"]["HOST"] = unquote(DATABASES["default"]["HOST"])
DATABASES["default"].setdefault("CONN_MAX_AGE", env_number("CONN_MAX_AGE", 0, low=0))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# CACHE_URL=redis://host:6379/0 makes the cache (and the backup lock) shared by every process
# and host. Without it the cache is per process.
CACHE_URL = env.str("CACHE_URL", default="")
REDIS_CONNECT_TIMEOUT_S = env_number("REDIS_CONNECT_TIMEOUT_S", 2.0, low=0.1, cast=float)
REDIS_SOCKET_TIMEOUT_S = env_number("REDIS_SOCKET_TIMEOUT_S", 2.0, low=0.1, cast=float)
if CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": CACHE_URL,
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                # A dead Redis host must not hang a request.
                "SOCKET_CONNECT_TIMEOUT": REDIS_CONNECT_TIMEOUT_S,
                "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT_S,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = ["accounts.backends.HubUserBackend"]

# The spec's language (Chinese) is the default; English through the language switcher.
LANGUAGE_CODE = env.str("LANGUAGE_CODE", default="zh-hans")
LANGUAGES = [("zh-hans", _("Simplified Chinese")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
# Times in exported files and on pages use this zone; UTC files end in Z.
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Without collectstatic (development, tests), whitenoise serves straight from the app folders.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=DEBUG)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if env.bool("STATIC_MANIFEST", default=not DEBUG)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
)

# --- Exports -----------------------------------------------------------------------------
# Unset (the default): every matching row is exported. Set: the file stops after this many
# rows, and the response header X-Export-Truncated and the usage-log page say so.
USAGE_EXPORT_MAX_ROWS = env_number("USAGE_EXPORT_MAX_ROWS", None, low=1)
# How many usage rows the dashboard shows per page.
USAGE_PAGE_SIZE = env_number("USAGE_PAGE_SIZE", 50, low=1, high=1000)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
    },
}

# --- Stored request details (session request export) ---------------------------------------
# Message content in stored request bodies is replaced by [REDACTED] unless this is true.
STORE_SESSION_MESSAGES = env.bool("STORE_SESSION_MESSAGES", default=False)
SESSION_DETAILS_RETENTION_DAYS = env_number("SESSION_DETAILS_RETENTION_DAYS", 7, low=1)
# `manage.py prune_session_details` deletes this many details per statement.
SESSION_DETAILS_PRUNE_BATCH = env_number("SESSION_DETAILS_PRUNE_BATCH", 5000, low=1)
# Sessions per page on /dashboard/sessions/.
SESSION_PAGE_SIZE = env_number("SESSION_PAGE_SIZE", 50, low=1, high=1000)

# --- Ingest API (POST /api/ingest/requests, monitoring/api.py) ------------------------------
# The deployment's ingest token (Authorization: Bearer <token>); empty disables the API (503).
INGEST_TOKEN = env.str("INGEST_TOKEN", default="")
# Largest request body and most rows per batch; bigger batches get 413 / 400.
INGEST_MAX_BODY_BYTES = env_number("INGEST_MAX_BODY_BYTES", 16 * 1024**2, low=1)
INGEST_MAX_ROWS = env_number("INGEST_MAX_ROWS", 5000, low=1)

# --- Probes -------------------------------------------------------------------------------
PROBE_LOG_RETENTION_DAYS = env_number("PROBE_LOG_RETENTION_DAYS", 1, low=1)
# Defaults of `manage.py probe_endpoints` (its options override them) and of "Probe now".
PROBE_METHOD = env.str("PROBE_METHOD", default="tcp")  # tcp | head | get
if PROBE_METHOD not in ("tcp", "head", "get"):
    raise ImproperlyConfigured(f"PROBE_METHOD={PROBE_METHOD!r}: use tcp, head or get.")
PROBE_TIMEOUT_MS = env_number("PROBE_TIMEOUT_MS", 5000, low=1)
PROBE_INTERVAL_S = env_number("PROBE_INTERVAL_S", 60, low=1, cast=float)
# The shorter interval of an endpoint whose last probe timed out.
PROBE_TIMEOUT_INTERVAL_S = env_number("PROBE_TIMEOUT_INTERVAL_S", 10, low=1, cast=float)
# Each next probe lands within +/- this fraction of its interval, so probes spread out.
PROBE_JITTER = env_number("PROBE_JITTER", 0.1, low=0, high=0.5, cast=float)
PROBE_CONCURRENCY = env_number("PROBE_CONCURRENCY", 10, low=1, high=1000)
PROBE_PRUNE_BATCH = env_number("PROBE_PRUNE_BATCH", 5000, low=1)
# Seconds between refreshes of the probe terminal on an endpoint's page.
PROBE_TERMINAL_REFRESH_S = env_number("PROBE_TERMINAL_REFRESH_S", 5, low=1)

# --- Database backup and restore (exports/backup.py, exports/locks.py, exports/restore.py) ----
# TTL of the backup lock (Redis key database:backup:lock, or the per-process fallback); its
# holder renews it every TTL/3 while a backup or restore runs.
BACKUP_LOCK_TTL_MS = env_number("BACKUP_LOCK_TTL_MS", 300_000, low=1000)
# gzip level of pg_dump -Fc (0-9). 1, not pg_dump's default (6): see bench/backup_download.py.
BACKUP_COMPRESSION_LEVEL = env_number("BACKUP_COMPRESSION_LEVEL", 1, low=0, high=9)
# Folder of the PostgreSQL client tools; empty: the newest /usr/lib/postgresql/N/bin, then PATH.
PG_BIN_DIR = env.str("PG_BIN_DIR", default="")
# Private folder (0700) for pgpass files and restore uploads; empty: <system temp>/hub-backup.
BACKUP_WORK_DIR = env.str("BACKUP_WORK_DIR", default="")
# Largest restore upload accepted, in bytes (default 2 GiB).
RESTORE_MAX_UPLOAD_BYTES = env_number("RESTORE_MAX_UPLOAD_BYTES", 2 * 1024**3, low=1)
# Restore uploads left behind by a crash are removed once older than this many hours.
RESTORE_STALE_HOURS = env_number("RESTORE_STALE_HOURS", 6.0, low=0.1, cast=float)
# Milliseconds pg_restore may wait for a table lock (a session holding the table open, e.g. a
# stalled usage-CSV download) before it is cancelled and the restore fails as "database busy".
RESTORE_LOCK_TIMEOUT_MS = env_number("RESTORE_LOCK_TIMEOUT_MS", 10_000, low=1)
