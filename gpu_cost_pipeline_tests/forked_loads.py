"""Run one `dagster` command under many environments, each in its own forked process.

Loading the code location is what the tests check; importing Dagster, pandas and the Kubernetes
client is ~10 s of each `python -m dagster` and checks nothing. This script (itself started as
a subprocess) imports those libraries once, then forks one child per environment: the child sets
the environment, imports gpu_cost_pipeline fresh (never imported here) and runs the Dagster CLI
exactly as `dagster ...` would. Input on stdin, results on stdout, both JSON:

    {"args": ["definitions", "validate", "-m", "..."], "envs": [{...}, ...], "parallel": 2}
    [{"returncode": 0, "output": "..."}, ...]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

# The libraries the code location imports, loaded once before any fork. Nothing here reads a
# GPU_COST_* variable: the settings are read when gpu_cost_pipeline is imported, in the child.
import dagster
import kubernetes.client  # noqa: F401
import pandas  # noqa: F401
import psycopg  # noqa: F401
import requests  # noqa: F401
from dagster._cli import cli


def _child(args: list[str], env: dict[str, str], output_path: str) -> None:
    """In the forked child: never returns."""
    code = 1
    try:
        os.environ.update(env)
        output = os.open(output_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(output, 1)
        os.dup2(output, 2)
        try:
            cli.main(args=args, prog_name="dagster", standalone_mode=True)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:  # what `python -m dagster` would print before exiting 1
            import traceback

            traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _prepared_home(folder: str) -> str:
    """A DAGSTER_HOME whose SQLite storage already exists, for the children that set none:
    otherwise each would create and migrate a temporary instance (~2 s, not what is tested)."""
    home = os.path.join(folder, "dagster_home")
    os.makedirs(home)
    with dagster.DagsterInstance.from_config(home):
        pass
    return home


def run_all(args: list[str], envs: list[dict[str, str]], parallel: int) -> list[dict]:
    results: list[dict | None] = [None] * len(envs)
    running: dict[int, tuple[int, str]] = {}  # pid → (index, output file)
    with tempfile.TemporaryDirectory() as folder:
        home = _prepared_home(folder)
        pending = [(index, {"DAGSTER_HOME": home, **env}) for index, env in enumerate(envs)]
        while pending or running:
            while pending and len(running) < parallel:
                index, env = pending.pop(0)
                output_path = os.path.join(folder, f"{index}.out")
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(args, env, output_path)
                running[pid] = (index, output_path)
            pid, status = os.wait()
            index, output_path = running.pop(pid)
            with open(output_path, errors="replace") as output:
                results[index] = {
                    "returncode": os.waitstatus_to_exitcode(status),
                    "output": output.read(),
                }
    return [result for result in results if result is not None]


def main() -> None:
    request = json.load(sys.stdin)
    results = run_all(request["args"], request["envs"], int(request.get("parallel", 2)))
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
