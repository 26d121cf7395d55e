"""The local stack: moto's server, an embedded PostgreSQL and a Slack sink on 127.0.0.1.

`drsentry local up` starts them as detached processes that outlive the CLI, creates the
sample database, writes a `drsentry.yaml` that points every capability at them and
provisions what it names. ``state.json`` in the state directory records pids, ports and
paths, so that `up` can run twice, `env` can print the exports and `down` stops exactly
what `up` started.

A stack belongs to a checkout, not to a user: its state directory is ``.drsentry/local`` at
the root of the git checkout the command runs in (``$DRSENTRY_LOCAL_DIR`` overrides it), so
two checkouts get two stacks and one's `down` never stops the other's. `down` forgets the
stack: moto holds the buckets and the catalog in memory only, so the PostgreSQL data and the
Slack posts go with them; a later `up` starts from nothing, never from databases whose
backups and records are gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import yaml

from drsentry.adapters.aws import AwsClients
from drsentry.core.config import Config, dump_config, parse_config
from drsentry.core.errors import BadInput, DrsentryError
from drsentry.local import embedded_pg
from drsentry.local.provision import provision, rds_secret
from drsentry.local.sample import create_sample_database

HOST = "127.0.0.1"
REGION = "us-east-1"
REPLICA_REGION = "eu-west-1"
PRIMARY_BUCKET = "drsentry-local-backups"
REPLICA_BUCKET = "drsentry-local-replica"
ARCHIVE_BUCKET = "drsentry-local-archive"
CATALOG_TABLE = "drsentry-catalog"
SNS_TOPIC_ARN = f"arn:aws:sns:{REGION}:123456789012:drsentry-alerts"
APP_SECRET = "drsentry/app-db"
SCRATCH_SECRET = "drsentry/scratch"
SLACK_SECRET = "drsentry/slack"
APP_DB = "app"
TEST_CREDENTIAL = "testing"

STATE_FILE = "state.json"
CONFIG_FILE = "drsentry.yaml"
SLACK_POSTS_FILE = "slack-posts.jsonl"
PG_DIR = "pgdata"
LOCK_FILE = ".lock"
# Where a checkout keeps its stack, relative to its root; .gitignore lists `.drsentry/`.
CHECKOUT_STATE_DIR = Path(".drsentry") / "local"

READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 5.0
NOT_RUNNING = (
    "local stack is not running in {state_dir}: run `drsentry local up` "
    "(DRSENTRY_LOCAL_DIR chooses another directory)"
)


class LocalStackError(DrsentryError):
    """A process of the local stack did not start or did not answer."""


def _moto_argv(port: int, state_dir: Path) -> list[str]:
    return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]


def _slack_sink_argv(port: int, state_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "drsentry.local.slack_sink",
        "--port", str(port), "--log", str(state_dir / SLACK_POSTS_FILE),
    ]  # fmt: skip


# The processes `up` launches itself (PostgreSQL is started by pg_ctl, which detaches it).
_SERVICES: dict[str, Callable[[int, Path], list[str]]] = {
    "moto": _moto_argv,
    "slack-sink": _slack_sink_argv,
}

# Popen objects of the processes this interpreter launched. Holding them lets `down` (or a
# restart) in the same interpreter reap its children: an unreaped zombie would still look
# alive to os.kill(pid, 0).
_launched: dict[int, subprocess.Popen[bytes]] = {}


def default_state_dir() -> Path:
    """``$DRSENTRY_LOCAL_DIR``, else ``.drsentry/local`` in the checkout (see `checkout_root`); created."""
    explicit = os.environ.get("DRSENTRY_LOCAL_DIR")
    state_dir = Path(explicit).expanduser() if explicit else checkout_root(Path.cwd()) / CHECKOUT_STATE_DIR
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    return state_dir


def checkout_root(start: Path) -> Path:
    """The nearest directory from `start` upwards that holds ``.git``, else `start` itself.

    The checkout, not the user and not the config: `local up` writes the config, so there is
    none to go by before it runs, while every command of one checkout (from any of its
    subdirectories) must find the same stack and another checkout must not. ``.git`` is a
    directory in a clone and a file in a `git worktree`; both count.
    """
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
    return start


def up(state_dir: Path) -> dict[str, str]:
    """Start (or find running) the local stack; return what `drsentry local up --json` prints."""
    state_dir = state_dir.expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    with _locked(state_dir):
        state = _read_state(state_dir)
        processes: dict[str, dict[str, Any]] = state.setdefault("processes", {})
        starting: dict[str, subprocess.Popen[bytes]] = {}
        for name, argv_for in _SERVICES.items():
            record = processes.get(name)
            if record is not None and _runs(record) and _answers(record["port"]):
                continue
            if record is not None and _runs(record):
                _terminate(record["pid"])  # ours, but hung: a second copy would only fight it for the port
            port = record["port"] if record is not None and _port_free(record["port"]) else _free_port()
            log = state_dir / f"{name}.log"
            argv = argv_for(port, state_dir)
            popen = _launch(argv, log, state_dir)
            processes[name] = {"pid": popen.pid, "port": port, "argv": argv, "log": str(log)}
            starting[name] = popen
        if "moto" in starting:
            state["provisioned"] = None  # moto keeps everything in memory: a new one is empty
        # Record the pids before anything else can fail, so that `down` can still stop them.
        _write_state(state_dir, state)

        # PostgreSQL starts while moto and the sink import their modules.
        server = _start_postgres(state_dir)
        state["postgres"] = {"pid": server.pid, "port": server.port, "data_dir": str(server.data_dir)}
        for name, popen in starting.items():
            _wait_until_answers(name, popen, processes[name]["port"], Path(processes[name]["log"]))

        endpoint = f"http://{HOST}:{processes['moto']['port']}"
        _use_local_aws(endpoint)
        admin_dsn = server.dsn("postgres")
        _create_app_database(server)
        config, config_path = _write_config(state_dir)
        secret_values = _secret_values(server, processes["slack-sink"]["port"])
        fingerprint = _fingerprint(dump_config(config), secret_values)
        if state.get("provisioned") != fingerprint:
            provision(config, AwsClients(REGION), secret_values=secret_values)
            state["provisioned"] = fingerprint

        document = {
            "aws_endpoint_url": endpoint,
            "pg_dsn": admin_dsn,
            "config": str(config_path),
            "slack_log": str(state_dir / SLACK_POSTS_FILE),
        }
        state["document"] = document
        _write_state(state_dir, state)
        return document


def down(state_dir: Path, *, keep_databases: bool = False) -> list[str]:
    """Stop what `up` started in `state_dir` and forget its data; return the names of what was running.

    The PostgreSQL data directory and the Slack posts are removed with the processes: moto's
    buckets and catalog are gone once it stops, and databases or posts that outlived them
    would describe backups that no longer exist. Logs and drsentry.yaml stay (the next `up`
    writes the same config). `keep_databases` keeps the PostgreSQL data for a caller whose
    databases are inputs it rebuilds at great cost, not records (the benchmark's).
    """
    state_dir = state_dir.expanduser().resolve()
    if not state_dir.is_dir():
        return []
    stopped: list[str] = []
    with _locked(state_dir):
        state = _read_state(state_dir)
        for name, record in state.get("processes", {}).items():
            # A pid from state.json may since have been reused by an unrelated process.
            if _runs(record):
                _terminate(record["pid"])
                stopped.append(name)
        data_dir = state_dir / PG_DIR
        if embedded_pg.stop(data_dir):
            stopped.append("postgres")
        _forget_data(state_dir, data_dir, keep_databases=keep_databases)
        (state_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def _forget_data(state_dir: Path, data_dir: Path, *, keep_databases: bool) -> None:
    try:
        (state_dir / SLACK_POSTS_FILE).unlink(missing_ok=True)
        if keep_databases:
            return
        if embedded_pg.running(data_dir):
            # Never delete the files under a server that still runs.
            raise LocalStackError(
                f"embedded PostgreSQL in {data_dir} did not stop; see {data_dir / 'server.log'}, stop it, "
                "then run `drsentry local down` again"
            )
        if data_dir.exists():
            shutil.rmtree(data_dir)
        embedded_pg.forget(data_dir)
    except OSError as exc:
        raise LocalStackError(
            f"cannot remove {exc.filename or data_dir}: {exc.strerror or exc}; remove it before the next "
            "`drsentry local up`, which would otherwise bring back databases without their backups"
        ) from exc


def env_lines(state_dir: Path) -> list[str]:
    """The shell `export` lines that point boto3 and drsentry at the running stack."""
    state_dir = state_dir.expanduser().resolve()
    state = _read_state(state_dir) if state_dir.is_dir() else {}
    if not _is_running(state):
        raise BadInput(NOT_RUNNING.format(state_dir=state_dir))
    document = state["document"]
    exports = {
        "AWS_ENDPOINT_URL": document["aws_endpoint_url"],
        "AWS_ACCESS_KEY_ID": TEST_CREDENTIAL,
        "AWS_SECRET_ACCESS_KEY": TEST_CREDENTIAL,
        "AWS_DEFAULT_REGION": REGION,
        "DRSENTRY_CONFIG": document["config"],
    }
    return [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]


def config_document() -> dict[str, Any]:
    """The local `drsentry.yaml`, as written by `up`: every capability runs against it unchanged."""
    return {
        "rpo": "1h",
        "rto": "15m",
        "storage": {
            "bucket": PRIMARY_BUCKET,
            "region": REGION,
            "prefix": "backups/",
            "replica": {"bucket": REPLICA_BUCKET, "region": REPLICA_REGION, "mode": "copy", "max_lag": "15m"},
            "archive": {"bucket": ARCHIVE_BUCKET, "storage_class": "DEEP_ARCHIVE", "lock_days": 2555},
        },
        "retention": {"hourly": "7d", "daily": "30d", "weekly": "365d", "monthly": "2555d"},
        "catalog": {"table": CATALOG_TABLE},
        "notifications": {"sns_topic_arn": SNS_TOPIC_ARN, "slack_webhook_secret": SLACK_SECRET},
        "targets": [
            {
                "name": APP_DB,
                "dsn_secret": APP_SECRET,
                "schedule": "cron(0 * * * ? *)",
                # No scratch server named: verify starts a blank throwaway server per run, the
                # product's default. The secret SCRATCH_SECRET (the embedded server) is still
                # provisioned for a config that wants a standing scratch server.
                "verify": {
                    "critical_tables": ["organizations", "profiles", "appointments"],
                    "functions": ["book_appointment_with_lock"],
                    "rls_tables": ["profiles"],
                    "min_size": "1MB",
                    "row_count_tolerance": 0.10,
                    "assertions": [
                        {
                            "name": "recent rows",
                            "sql": "select count(*) > 0 from appointments "
                            "where created_at > now() - interval '2 days'",
                            "severity": "warning",
                        }
                    ],
                },
            }
        ],
    }


def _create_app_database(server: embedded_pg.EmbeddedServer) -> None:
    try:
        create_sample_database(server.dsn("postgres"), APP_DB)
    except psycopg.Error as exc:
        raise LocalStackError(
            f"cannot create the sample database {APP_DB!r}: {_last_line(str(exc))}; "
            f"see {server.data_dir / 'server.log'}"
        ) from exc


def _write_config(state_dir: Path) -> tuple[Config, Path]:
    config = parse_config(yaml.safe_dump(config_document(), sort_keys=False))
    path = state_dir / CONFIG_FILE
    text = dump_config(config)
    # Rewriting an unchanged file would only disturb a user who is watching or editing it.
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        _write_atomically(path, text, mode=0o644)
    return config, path


def _secret_values(server: embedded_pg.EmbeddedServer, sink_port: int) -> dict[str, dict[str, Any] | str]:
    # Both secrets use the superuser: pg_dump must see past the sample's row-level security,
    # and verification creates and drops its scratch databases on the same server.
    return {
        # The embedded server has no TLS (it listens on 127.0.0.1 only).
        APP_SECRET: rds_secret(
            HOST, server.port, embedded_pg.SUPERUSER, server.password, APP_DB, sslmode="disable"
        ),
        SCRATCH_SECRET: rds_secret(
            HOST, server.port, embedded_pg.SUPERUSER, server.password, "postgres", sslmode="disable"
        ),
        SLACK_SECRET: f"http://{HOST}:{sink_port}/services/T000/B000/local",
    }


def _fingerprint(config_text: str, secret_values: dict[str, dict[str, Any] | str]) -> str:
    # Stored in state.json instead of the secrets themselves, which hold the password.
    material = json.dumps({"config": config_text, "secrets": secret_values}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def _use_local_aws(endpoint: str) -> None:
    # boto3 reads these itself; AwsClients built after this talk to the local endpoint only.
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    os.environ["AWS_ACCESS_KEY_ID"] = TEST_CREDENTIAL
    os.environ["AWS_SECRET_ACCESS_KEY"] = TEST_CREDENTIAL
    os.environ["AWS_DEFAULT_REGION"] = REGION


def _start_postgres(state_dir: Path) -> embedded_pg.EmbeddedServer:
    data_dir = state_dir / PG_DIR
    try:
        return embedded_pg.start(data_dir)
    except subprocess.CalledProcessError as exc:
        detail = _last_line(exc.stderr or exc.stdout or "")
        raise LocalStackError(
            f"embedded PostgreSQL did not start ({detail or f'exit code {exc.returncode}'}); "
            f"see {data_dir / 'server.log'}"
        ) from exc
    except RuntimeError as exc:
        raise LocalStackError(f"{exc}; see {data_dir / 'server.log'}") from exc


def _launch(argv: list[str], log: Path, state_dir: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as log_file:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=state_dir,
            # Its own session: the process outlives the CLI and a Ctrl-C in the user's shell.
            start_new_session=True,
        )
    _launched[popen.pid] = popen
    return popen


def _wait_until_answers(name: str, popen: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not _answers(port):
        if popen.poll() is not None:
            detail = _last_line(log.read_text(encoding="utf-8", errors="replace")) if log.exists() else ""
            raise LocalStackError(
                f"{name} exited with code {popen.returncode} before answering on {HOST}:{port}"
                f"{f' ({detail})' if detail else ''}; see {log}"
            )
        if time.monotonic() > deadline:
            raise LocalStackError(
                f"{name} did not answer on {HOST}:{port} within {READY_TIMEOUT_SECONDS:g}s; see {log}"
            )
        time.sleep(0.05)


def _is_running(state: dict[str, Any]) -> bool:
    if "document" not in state or "postgres" not in state:
        return False
    if set(state.get("processes", {})) != set(_SERVICES):
        return False
    for record in state["processes"].values():
        if not (_runs(record) and _answers(record["port"])):
            return False
    postgres = state["postgres"]
    return postgres["pid"] is not None and _alive(postgres["pid"]) and _answers(postgres["port"])


def _runs(record: dict[str, Any]) -> bool:
    """The recorded process is alive and is still the program `up` started under that pid."""
    pid = int(record["pid"])
    return _alive(pid) and _command_of(pid) == " ".join(record["argv"])


def _alive(pid: int) -> bool:
    launched = _launched.get(pid)
    if launched is not None and launched.poll() is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _command_of(pid: int) -> str | None:
    proc = Path("/proc")
    if proc.is_dir():
        try:
            raw = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            return None
        return " ".join(raw.decode("utf-8", errors="replace").rstrip("\0").split("\0"))
    # No /proc (macOS): ps prints the command line joined with spaces.
    result = subprocess.run(
        ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def _terminate(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            # The process leads its own session (start_new_session); its group holds any children.
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _alive(pid):
            break
    _launched.pop(pid, None)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As moto's and the sink's HTTP servers bind: connections of a killed server that linger
        # in TIME_WAIT / FIN_WAIT_2 do not keep a restarted one from its old port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    return embedded_pg.free_port()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    # Two `up`s at once (two terminals, a test and a demo) must not start two of everything.
    with (state_dir / LOCK_FILE).open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _read_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise LocalStackError(f"cannot read {path}: {exc}; remove it and run `drsentry local up`") from exc
    return state


def _write_state(state_dir: Path, state: dict[str, Any]) -> None:
    # state.json holds the PostgreSQL superuser password (in pg_dsn): owner-only.
    _write_atomically(state_dir / STATE_FILE, json.dumps(state, indent=2) + "\n", mode=0o600)


def _write_atomically(path: Path, text: str, *, mode: int) -> None:
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    partial.chmod(mode)
    os.replace(partial, path)
