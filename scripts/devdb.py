#!/usr/bin/env python3
"""A local PostgreSQL cluster in a folder of the checkout, for the run and test commands.

    devdb.py start DIR    create the cluster if DIR has none, start it, print its DATABASE_URL
    devdb.py stop DIR     stop it (fast shutdown)
    devdb.py url DIR      print the DATABASE_URL of a cluster that runs

Only the standard library: it runs before the virtualenv exists. PostgreSQL refuses to run as
root, so as root the server runs as the `postgres` system user (created if missing).
"""

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

DB_NAME = "hub"
DB_USER = "hub"


def die(message: str) -> None:
    print(f"devdb: {message}", file=sys.stderr)
    sys.exit(1)


def pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    die(f"{name} not found: install the PostgreSQL server binaries (Debian: postgresql).")


def server_user() -> str | None:
    """The OS user the server runs as: None for ourselves, `postgres` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--home-dir", "/var/lib/postgresql", "--shell", "/bin/sh", "postgres"],
            check=True,
        )
    return "postgres"


def run_as_server(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    user = server_user()
    if user:
        args = ["runuser", "-u", user, "--", *args]
    return subprocess.run(args, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chown_to_server(path: Path) -> None:
    user = server_user()
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def url_for(root: Path) -> str:
    port = (root / "port").read_text().strip()
    password = (root / "password").read_text().strip()
    return f"postgres://{DB_USER}:{quote(password, safe='')}@127.0.0.1:{port}/{DB_NAME}"


def init_cluster(root: Path) -> None:
    data = root / "data"
    root.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    (root / "password").write_text(password + "\n")
    os.chmod(root / "password", 0o600)
    (root / "port").write_text(f"{free_port()}\n")
    data.mkdir(mode=0o700)
    chown_to_server(data)
    sock = root / "sock"
    sock.mkdir(exist_ok=True)
    chown_to_server(sock)
    pwfile = root / "initdb-pw"
    pwfile.write_text(password + "\n")
    chown_to_server(pwfile)
    try:
        run_as_server(
            [
                pg_bin("initdb"),
                "-D", str(data),
                "-U", DB_USER,
                "--pwfile", str(pwfile),
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    finally:
        pwfile.unlink()
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            "\n# devdb.py: a throwaway development cluster.\n"
            f"unix_socket_directories = '{sock}'\n"
            "listen_addresses = '127.0.0.1'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            "max_connections = 100\nshared_buffers = 256MB\nmaintenance_work_mem = 256MB\n"
        )


def running(root: Path) -> bool:
    data = root / "data"
    if not (data / "postmaster.pid").exists():
        return False
    return run_as_server([pg_bin("pg_ctl"), "-D", str(data), "status"], capture_output=True).returncode == 0


def start(root: Path) -> None:
    root = root.resolve()
    if not (root / "data" / "PG_VERSION").exists():
        if root.exists() and any(root.iterdir()):
            shutil.rmtree(root)  # a half-made cluster from an interrupted first run
        init_cluster(root)
        created = True
    else:
        created = False
    if not running(root):
        port = (root / "port").read_text().strip()
        log = root / "server.log"
        log.touch()
        chown_to_server(log)
        result = run_as_server(
            [pg_bin("pg_ctl"), "-D", str(root / "data"), "-l", str(log), "-o", f"-p {port}", "-w", "-t", "60", "start"],
            stdout=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            die(f"the server did not start; see {log}")
    if created:
        env = {**os.environ, "PGPASSWORD": (root / "password").read_text().strip()}
        port = (root / "port").read_text().strip()
        subprocess.run(
            [pg_bin("createdb"), "-h", "127.0.0.1", "-p", port, "-U", DB_USER, DB_NAME],
            check=True,
            env=env,
        )
    print(url_for(root))


def stop(root: Path) -> None:
    root = root.resolve()
    if running(root):
        run_as_server(
            [pg_bin("pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop"],
            stdout=subprocess.DEVNULL,
        )


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in {"start", "stop", "url"}:
        die("usage: devdb.py start|stop|url DIR")
    command, root = sys.argv[1], Path(sys.argv[2])
    if command == "start":
        start(root)
    elif command == "stop":
        stop(root)
    else:
        if not running(root.resolve()):
            die(f"no cluster runs in {root}")
        print(url_for(root.resolve()))


if __name__ == "__main__":
    time.tzset()
    main()
