"""Where a study lives: SQLite in the data dir by default, the shared Redis, or any database.

The storage is what makes a study resumable and shareable. The default, `DATA_DIR/optuna.db`,
keeps a study between runs on one machine (and between the worker processes of one run). A
`redis://` URL stores it in optuna's journal on that Redis under `bfx:{namespace}:optuna`, so
every machine pointed at the same Redis and namespace works on the same studies: the scale-out
path, on the Redis the stack already shares. Anything else is handed to SQLAlchemy (PostgreSQL,
MySQL, another SQLite file). Each worker process opens its own storage from the same URL; an
optuna storage object is not shared across processes.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from barfinex_cli.errors import RedisUnreachable, UsageError, mask_url

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

SQLITE_TIMEOUT_S = 60
"""Worker processes take turns writing one SQLite file; wait for the lock rather than fail."""


def storage_url(url: str | None, home: Path) -> str:
    """Return the storage URL a run uses: the given one, or SQLite in the data directory."""
    return url or f"sqlite:///{home / 'optuna.db'}"


def journal_prefix(namespace: str) -> str:
    """Return the Redis key prefix of the optuna journal for a bus namespace."""
    return f"bfx:{namespace}:optuna"


def open_storage(url: str, namespace: str) -> BaseStorage:
    """Return the optuna storage at `url` (see the module doc for the kinds).

    Raises:
        RedisUnreachable: A `redis://` URL whose server does not answer.
        UsageError: A URL SQLAlchemy cannot use (unknown dialect, missing driver, bad form).
    """
    import optuna

    if url.startswith(("redis://", "rediss://", "unix://")):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            client.ping()
        except redis.RedisError as exc:
            raise RedisUnreachable(url, str(exc)) from None
        finally:
            client.close()
        from optuna.storages.journal import JournalRedisBackend

        with warnings.catch_warnings():  # "experimental" since optuna 3.1, unchanged through 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            backend = JournalRedisBackend(url, prefix=journal_prefix(namespace))
        return optuna.storages.JournalStorage(backend)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except (ImportError, ValueError) as exc:
        raise UsageError(
            f"--storage {mask_url(url)}: {exc} — give sqlite:///PATH, redis://HOST:6379/0 or a "
            "SQLAlchemy URL whose driver is installed"
        ) from None
    except Exception as exc:  # SQLAlchemy's ArgumentError/OperationalError: one line, no trace
        if type(exc).__module__.startswith("sqlalchemy"):
            reason = str(exc).splitlines()[0]
            raise UsageError(
                f"--storage {mask_url(url)}: {reason} — give sqlite:///PATH, "
                "redis://HOST:6379/0 or a SQLAlchemy URL of a reachable database"
            ) from None
        raise
    if url.startswith("sqlite"):
        _write_ahead(storage)
    return storage


def _write_ahead(storage: optuna.storages.RDBStorage) -> None:
    """Put SQLite in WAL mode with normal syncs: readers never wait on the writing worker, and
    a trial's few commits are not each an fsync (about 2x fewer ms per trial here)."""
    from sqlalchemy import event

    def pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # the connections made while creating the schema had no pragmas
