"""Two real gunicorn servers sharing one redis-server: one backup at a time across processes,
and what a client sees when it goes away or pg_dump dies mid-stream."""

import http.client
import json
import os
import signal
import threading
from urllib.parse import urlsplit

import pytest
import redis
from django.test import Client

from exports.locks import LOCK_KEY

from .backup_support import Gunicorn, add_bulky_usage_rows, pg_dump_processes, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

PATH = "/exports/database-backup?mode=full"


@pytest.fixture
def shared_redis(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.delete(LOCK_KEY)
    yield client
    client.delete(LOCK_KEY)


@pytest.fixture
def admin_cookie(admin_user):
    client = Client()
    client.force_login(admin_user)
    return f"sessionid={client.cookies['sessionid'].value}"


@pytest.fixture
def servers(tmp_path, redis_url, shared_redis):
    # Compression 0 and bulky rows: a dump of ~32 MB, far more than the socket and pipe buffers,
    # so a download that the client stops reading is still running.
    add_bulky_usage_rows()
    env = {"CACHE_URL": redis_url, "BACKUP_COMPRESSION_LEVEL": "0", "BACKUP_WORK_DIR": str(tmp_path / "work")}
    started = []
    try:
        for name in ("a", "b"):
            started.append(Gunicorn(tmp_path, env=env, name=name))
        yield started
    finally:
        for server in started:
            server.stop()


def open_download(server, cookie, method="GET"):
    host = urlsplit(server.url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    conn.request(method, PATH, headers={"Cookie": cookie})
    return conn, conn.getresponse()


def test_two_servers_give_one_200_and_one_409_then_200_after_the_first_ends(servers, admin_cookie, shared_redis):
    a, b = servers
    answers = {}
    go = threading.Barrier(2)

    def request(server):
        go.wait()
        answers[server.url] = open_download(server, admin_cookie)

    threads = [threading.Thread(target=request, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    statuses = sorted(response.status for _conn, response in answers.values())
    assert statuses == [200, 409]
    (winner_conn, winner), (loser_conn, loser) = sorted(answers.values(), key=lambda cr: cr[1].status)
    assert json.loads(loser.read())["error"] == "Another admin is performing backup"
    assert shared_redis.get(LOCK_KEY) is not None
    data = winner.read()  # http.client checks the chunked framing: a clean end
    assert data.startswith(b"PGDMP") and len(data) > 30_000_000
    winner_conn.close()
    loser_conn.close()
    # Released before the last chunk was sent, so the very next download gets the lock.
    for server in (a, b):
        conn, response = open_download(server, admin_cookie)
        assert response.status == 200
        assert response.read().startswith(b"PGDMP")
        conn.close()


def test_client_disconnect_mid_stream_stops_pg_dump_and_frees_the_lock_within_2s(servers, admin_cookie, shared_redis):
    server = servers[0]
    conn, response = open_download(server, admin_cookie)
    assert response.status == 200, (response.read()[:500], server.log.read_text()[-3000:])
    assert response.read(1024).startswith(b"PGDMP")
    [worker] = server.worker_pids()
    assert pg_dump_processes(worker), "pg_dump should be running for the open download"
    assert shared_redis.get(LOCK_KEY) is not None
    conn.sock.close()  # the client goes away with most of the dump unread
    conn.close()
    assert wait_until(lambda: not pg_dump_processes(worker), 2), "pg_dump (or its zombie) left behind"
    assert wait_until(lambda: shared_redis.get(LOCK_KEY) is None, 2), "lock still held"


def test_head_request_on_a_real_server_leaves_nothing_running(servers, admin_cookie, shared_redis):
    server = servers[0]
    conn, response = open_download(server, admin_cookie, method="HEAD")
    assert response.status == 200, server.log.read_text()[-3000:]
    assert response.getheader("Content-Disposition").startswith("attachment;")
    conn.close()
    [worker] = server.worker_pids()
    assert wait_until(lambda: not pg_dump_processes(worker), 2)
    assert wait_until(lambda: shared_redis.get(LOCK_KEY) is None, 2)


def test_pg_dump_killed_mid_stream_gives_the_client_an_incomplete_transfer(servers, admin_cookie, shared_redis):
    server = servers[0]
    conn, response = open_download(server, admin_cookie)
    assert response.status == 200, (response.read()[:500], server.log.read_text()[-3000:])
    assert response.read(1024).startswith(b"PGDMP")
    [worker] = server.worker_pids()
    [(pid, _state)] = pg_dump_processes(worker)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    conn.close()
    assert wait_until(lambda: shared_redis.get(LOCK_KEY) is None, 2)
    assert "pg_dump_error" in server.log.read_text()
