"""The backup lock against a real redis-server, and its per-process fallback."""

import threading

import pytest
import redis

from exports import locks
from exports.locks import LOCK_KEY, BackupLock, lock_status

from .backup_support import RedisServer, redis_caches, wait_until


@pytest.fixture(autouse=True)
def _clean_memory_locks():
    locks._memory_locks.clear()
    yield
    locks._memory_locks.clear()


@pytest.fixture
def shared_redis(settings, redis_url):
    settings.CACHES = redis_caches(redis_url)
    client = redis.Redis.from_url(redis_url)
    client.delete(LOCK_KEY)
    yield client
    client.delete(LOCK_KEY)


@pytest.mark.redis
def test_redis_lock_uses_the_spec_key_with_a_ttl_and_an_owner_token(shared_redis):
    lock = BackupLock()
    assert lock.acquire()
    try:
        assert lock.backend == "redis"
        assert shared_redis.get(LOCK_KEY) == lock.token.encode()
        assert 0 < shared_redis.pttl(LOCK_KEY) <= 300_000
        assert lock_status().held
    finally:
        lock.release()
    assert shared_redis.get(LOCK_KEY) is None
    assert not lock_status().held


@pytest.mark.redis
def test_second_holder_is_refused_until_the_first_releases(shared_redis):
    first, second = BackupLock(), BackupLock()
    assert first.acquire()
    assert not second.acquire()
    assert second.backend == "redis"
    first.release()
    assert second.acquire()
    second.release()


@pytest.mark.redis
def test_release_deletes_only_the_owners_lock(shared_redis, settings):
    settings.BACKUP_LOCK_TTL_MS = 200
    stale = BackupLock()
    assert stale.acquire()
    stale._stop.set()  # a holder that stopped renewing (a paused process)
    stale._renewer.join()
    assert wait_until(lambda: shared_redis.get(LOCK_KEY) is None, 5), "the TTL should free the lock"
    settings.BACKUP_LOCK_TTL_MS = 300_000
    successor = BackupLock()
    assert successor.acquire()
    stale.release()  # must not delete the successor's key
    assert shared_redis.get(LOCK_KEY) == successor.token.encode()
    successor.release()
    assert shared_redis.get(LOCK_KEY) is None


@pytest.mark.redis
def test_owner_renews_the_lock_past_its_ttl(shared_redis, settings):
    settings.BACKUP_LOCK_TTL_MS = 300
    lock = BackupLock()
    assert lock.acquire()
    renewed = threading.Event()
    original = lock.renew
    successes = []

    def counting_renew():
        ok = original()
        successes.append(ok)
        if sum(successes) >= 5:
            renewed.set()
        return ok

    lock.renew = counting_renew
    try:
        # Five renewals at TTL/3 span well past the 300 ms TTL: still ours.
        assert renewed.wait(10)
        assert shared_redis.get(LOCK_KEY) == lock.token.encode()
        assert not BackupLock().acquire()
    finally:
        lock.release()


@pytest.mark.redis
def test_renew_by_a_non_owner_fails(shared_redis):
    owner = BackupLock()
    assert owner.acquire()
    impostor = BackupLock()
    impostor.backend = "redis"
    assert not impostor.renew()
    owner.release()


@pytest.mark.redis
def test_falls_back_to_memory_when_redis_server_is_stopped(settings, tmp_path, caplog):
    server = RedisServer(tmp_path)
    settings.CACHES = redis_caches(server.url)
    server.stop()
    lock = BackupLock()
    with caplog.at_level("WARNING", logger="exports.locks"):
        assert lock.acquire()
    assert lock.backend == "memory"
    assert "backup_lock_fallback_to_memory" in caplog.text
    # The fallback still excludes a second backup in this process.
    other = BackupLock()
    assert not other.acquire()
    lock.release()  # never raises, even though Redis is gone
    assert other.acquire()
    other.release()


@pytest.mark.redis
def test_release_with_redis_gone_is_logged_not_raised(settings, tmp_path, caplog):
    server = RedisServer(tmp_path)
    settings.CACHES = redis_caches(server.url)
    lock = BackupLock()
    assert lock.acquire()
    assert lock.backend == "redis"
    server.stop()
    with caplog.at_level("ERROR", logger="exports.locks"):
        lock.release()
    assert "database_export_lock_release_error" in caplog.text


def test_without_redis_the_lock_is_per_process(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    first = BackupLock()
    assert first.acquire()
    assert first.backend == "memory"
    assert not BackupLock().acquire()
    status = lock_status()
    assert status.backend == "memory" and status.held and status.ttl_ms <= 300_000
    first.release()
    assert not lock_status().held


def test_memory_lock_expires_and_is_swept(settings):
    settings.BACKUP_LOCK_TTL_MS = 50
    crashed = BackupLock()
    assert crashed.acquire()
    crashed._stop.set()  # a holder that died without releasing
    crashed._renewer.join()
    assert wait_until(lambda: locks._sweep_expired() == 1, 5)
    assert LOCK_KEY not in locks._memory_locks
    fresh = BackupLock()
    assert fresh.acquire()
    fresh.release()


def test_memory_lock_is_renewed_while_held(settings):
    settings.BACKUP_LOCK_TTL_MS = 150
    lock = BackupLock()
    assert lock.acquire()
    first_expiry = locks._memory_locks[LOCK_KEY][1]
    assert wait_until(lambda: locks._memory_locks[LOCK_KEY][1] > first_expiry, 5)
    assert not BackupLock().acquire()
    lock.release()
