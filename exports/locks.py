"""The backup lock: one database backup or restore at a time, across every process and host.

With a Redis cache (CACHE_URL=redis://...) the lock is the Redis key `database:backup:lock`,
taken with SET NX PX and a random owner token. Only the owner may release it (compare-and-delete
in one Lua call) or extend it (compare-and-pexpire), so a holder whose lock expired can never
delete its successor's. While a backup or restore runs, a daemon thread renews the lock every
third of its TTL: a 20-minute dump keeps it, and a crashed holder's lock frees itself within
the TTL.

Without Redis, or when Redis fails on acquire, the lock is a per-process table with the same
TTL, swept every minute. It then protects only this process: with several workers or hosts two
backups may run at once (the data-management page says so).
"""

import logging
import secrets
import threading
import time
from dataclasses import dataclass

from django.conf import settings

log = logging.getLogger("exports.locks")

LOCK_KEY = "database:backup:lock"
REDIS = "redis"
MEMORY = "memory"

# KEYS[1] = lock key, ARGV[1] = owner token (, ARGV[2] = TTL in ms).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def lock_ttl_ms() -> int:
    return int(settings.BACKUP_LOCK_TTL_MS)


def redis_configured() -> bool:
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    return backend.startswith("django_redis.")


def _redis():
    from django_redis import get_redis_connection

    return get_redis_connection("default")


# --- the per-process fallback ---------------------------------------------------------------

_memory_mutex = threading.Lock()
_memory_locks: dict[str, tuple[str, float]] = {}  # key -> (token, monotonic expiry)
_sweeper: threading.Thread | None = None
SWEEP_INTERVAL_S = 60.0


def _sweep_expired() -> int:
    now = time.monotonic()
    with _memory_mutex:
        expired = [k for k, (_, expires) in _memory_locks.items() if expires <= now]
        for key in expired:
            del _memory_locks[key]
    if expired:
        log.info("backup_lock_swept backend=memory count=%d", len(expired))
    return len(expired)


def _sweep_forever() -> None:
    while True:
        time.sleep(SWEEP_INTERVAL_S)
        try:
            _sweep_expired()
        except Exception:  # the sweeper must outlive any one bad pass
            log.exception("backup_lock_sweep_error")


def _ensure_sweeper() -> None:
    global _sweeper
    with _memory_mutex:
        if _sweeper is None or not _sweeper.is_alive():
            _sweeper = threading.Thread(target=_sweep_forever, name="backup-lock-sweeper", daemon=True)
            _sweeper.start()


def _memory_acquire(token: str, ttl_ms: int) -> bool:
    _ensure_sweeper()
    now = time.monotonic()
    with _memory_mutex:
        held = _memory_locks.get(LOCK_KEY)
        if held is not None and held[1] > now:
            return False
        _memory_locks[LOCK_KEY] = (token, now + ttl_ms / 1000)
        return True


def _memory_compare(token: str, *, renew_ms: int | None) -> bool:
    """Release (renew_ms None) or extend the entry if `token` still owns it."""
    now = time.monotonic()
    with _memory_mutex:
        held = _memory_locks.get(LOCK_KEY)
        if held is None or held[0] != token or held[1] <= now:
            return False
        if renew_ms is None:
            del _memory_locks[LOCK_KEY]
        else:
            _memory_locks[LOCK_KEY] = (token, now + renew_ms / 1000)
        return True


# --- the lock -------------------------------------------------------------------------------


class BackupLock:
    """`acquire()` once; `release()` is safe to call any number of times, from any thread.

    `purpose` ("backup" or "restore") only labels log lines.
    """

    def __init__(self, *, purpose: str = "backup"):
        self.purpose = purpose
        self.token = secrets.token_hex(16)
        self.backend: str | None = None
        self.held = False
        self._ttl_ms = lock_ttl_ms()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._release_mutex = threading.Lock()

    def acquire(self) -> bool:
        if redis_configured():
            try:
                ok = bool(_redis().set(LOCK_KEY, self.token, nx=True, px=self._ttl_ms))
                return self._acquired(REDIS, ok)
            except Exception as exc:
                log.warning(
                    "backup_lock_fallback_to_memory purpose=%s error=%s: %s",
                    self.purpose, type(exc).__name__, exc,
                )
        return self._acquired(MEMORY, _memory_acquire(self.token, self._ttl_ms))

    def _acquired(self, backend: str, ok: bool) -> bool:
        self.backend = backend
        if not ok:
            log.info("backup_lock_conflict backend=%s purpose=%s", backend, self.purpose)
            return False
        self.held = True
        log.info(
            "backup_lock_acquired backend=%s purpose=%s ttl_ms=%d", backend, self.purpose, self._ttl_ms
        )
        self._renewer = threading.Thread(
            target=self._renew_until_released, name="backup-lock-renewer", daemon=True
        )
        self._renewer.start()
        return True

    def renew(self) -> bool:
        """Extend the TTL if we still own the lock. Errors are logged, never raised."""
        try:
            if self.backend == REDIS:
                ok = bool(_redis().eval(_RENEW, 1, LOCK_KEY, self.token, self._ttl_ms))
            else:
                ok = _memory_compare(self.token, renew_ms=self._ttl_ms)
        except Exception as exc:
            log.error("backup_lock_renew_error backend=%s error=%s: %s", self.backend, type(exc).__name__, exc)
            return False
        if not ok:
            log.error("backup_lock_lost backend=%s purpose=%s", self.backend, self.purpose)
        return ok

    def _renew_until_released(self) -> None:
        interval = max(self._ttl_ms / 3000, 0.05)
        while not self._stop.wait(interval):
            self.renew()

    def release(self) -> None:
        """Give the lock back if we still own it. Errors are logged, never raised."""
        with self._release_mutex:
            if not self.held:
                return
            self.held = False
        self._stop.set()
        renewer = self._renewer
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join(timeout=5)
        try:
            if self.backend == REDIS:
                owned = bool(_redis().eval(_RELEASE, 1, LOCK_KEY, self.token))
            else:
                owned = _memory_compare(self.token, renew_ms=None)
        except Exception as exc:
            log.error(
                "database_export_lock_release_error backend=%s purpose=%s error=%s: %s",
                self.backend, self.purpose, type(exc).__name__, exc,
            )
            return
        if owned:
            log.info("backup_lock_released backend=%s purpose=%s", self.backend, self.purpose)
        else:
            log.warning(
                "backup_lock_expired_before_release backend=%s purpose=%s", self.backend, self.purpose
            )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


@dataclass
class LockStatus:
    backend: str  # "redis" or "memory"
    held: bool
    ttl_ms: int | None  # remaining, when held
    error: str = ""


def lock_status() -> LockStatus:
    """Which lock a backup would take now, and whether someone holds it."""
    if redis_configured():
        try:
            remaining = _redis().pttl(LOCK_KEY)
            return LockStatus(REDIS, remaining > 0 or remaining == -1, remaining if remaining > 0 else None)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            # Falls through: an acquire now would fall back to the per-process lock.
            status = _memory_status()
            status.error = error
            return status
    return _memory_status()


def _memory_status() -> LockStatus:
    now = time.monotonic()
    with _memory_mutex:
        held = _memory_locks.get(LOCK_KEY)
    if held is None or held[1] <= now:
        return LockStatus(MEMORY, False, None)
    return LockStatus(MEMORY, True, int((held[1] - now) * 1000))
