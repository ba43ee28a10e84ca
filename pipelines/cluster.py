"""Where build tasks run: in-process (``sync``), a dask ``LocalCluster`` (``local``) or a remote scheduler.

:func:`open_runner` is a context manager yielding a :class:`Runner`, whose
:meth:`~Runner.map_unordered` runs a function over jobs with at most ``max_in_flight`` submitted
at a time (so memory stays bounded however many shards a database has) and yields results as they
complete. ``dask.distributed`` is imported only here and only when a cluster is asked for.

=====================  ====================================================================
``scheduler``          meaning
=====================  ====================================================================
``"sync"``             run every job in this process, one after the other (no dask)
``"local"``            ``LocalCluster(n_workers, threads_per_worker=1, memory_limit,
                       dashboard_address=None)``: one process per core
``"tcp://host:port"``  ``Client(address)`` of a running ``dask scheduler`` with workers
a ``Client``           an existing client (left open)
=====================  ====================================================================
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from crosslocate.errors import ConfigError, missing_dependency

logger = logging.getLogger(__name__)

#: Address schemes of dask schedulers that :func:`check_scheduler` accepts.
SCHEDULER_SCHEMES: tuple[str, ...] = ("tcp", "tls", "ucx", "ws", "wss", "inproc")
#: Seconds :func:`check_scheduler` waits for a TCP connection to a scheduler.
PROBE_TIMEOUT_S: float = 5.0

#: Result of one job: ``(job, result, None)`` or ``(job, None, exception)``.
Outcome = tuple[Any, Any, BaseException | None]


def available_cores() -> int:
    """CPU cores this process may use (scheduler affinity where known)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class Runner:
    """Runs jobs in this process, one at a time (the ``sync`` scheduler)."""

    #: Short description for logs and results JSON.
    description: str = "sync (in-process)"
    n_workers: int = 1

    def map_unordered(self, fn: Callable[[Any], Any], jobs: Iterable[Any], max_in_flight: int = 0) -> Iterator[Outcome]:
        """Yield ``(job, result, error)`` for every job (``error`` is the exception a job raised, else None).

        Exceptions other than ``Exception`` (KeyboardInterrupt, SystemExit) propagate.
        """
        for job in jobs:
            try:
                yield job, fn(job), None
            except Exception as exc:
                yield job, None, exc


class DaskRunner(Runner):
    """Runs jobs on a ``dask.distributed`` client, at most ``max_in_flight`` submitted at once."""

    def __init__(self, client: Any, description: str) -> None:
        self.client = client
        self.description = description
        try:
            self.n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        except (OSError, TimeoutError) as exc:
            logger.warning("cannot query dask workers (%s); assuming 1", exc)
            self.n_workers = 1

    def map_unordered(self, fn: Callable[[Any], Any], jobs: Iterable[Any], max_in_flight: int = 0) -> Iterator[Outcome]:
        from distributed import as_completed

        window = max_in_flight if max_in_flight > 0 else 2 * self.n_workers
        it = iter(jobs)
        by_key: dict[str, Any] = {}

        def submit_next() -> Any | None:
            job = next(it, None)
            if job is None:
                return None
            future = self.client.submit(fn, job, pure=False)
            by_key[future.key] = job
            return future

        first = [f for f in (submit_next() for _ in range(window)) if f is not None]
        if not first:
            return
        queue = as_completed(first)
        for future in queue:
            job = by_key.pop(future.key)
            try:
                yield job, future.result(), None
            except Exception as exc:
                yield job, None, exc
            finally:
                future.release()
            nxt = submit_next()
            if nxt is not None:
                queue.add(nxt)


def check_scheduler(scheduler: Any) -> None:
    """Raise :class:`ConfigError` unless ``scheduler`` can work: call it before writing anything.

    ``None``, ``"sync"``, ``"local"`` and client objects pass. An address needs a known scheme
    (:data:`SCHEDULER_SCHEMES`), a host and a port, and a ``tcp``/``tls`` address must accept a TCP
    connection within :data:`PROBE_TIMEOUT_S` seconds.
    """
    if scheduler is None or not isinstance(scheduler, str) or scheduler in ("sync", "local"):
        return
    hint = "use 'local', 'sync' or a scheduler address like tcp://host:8786"
    if "://" not in scheduler:
        raise ConfigError(f"--scheduler {scheduler!r}: {hint}")
    parts = urlsplit(scheduler)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in SCHEDULER_SCHEMES or not parts.hostname or (port is None and parts.scheme != "inproc"):
        raise ConfigError(f"--scheduler {scheduler!r} is not a dask scheduler address ({hint})")
    if parts.scheme in ("tcp", "tls"):
        try:
            with socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S):
                pass
        except OSError as exc:
            raise ConfigError(
                f"cannot reach the dask scheduler {scheduler} ({exc}); is `dask scheduler` running there?"
            ) from exc


@contextlib.contextmanager
def open_runner(
    scheduler: Any = "local", n_workers: int | None = None, memory_limit: str | int = "auto"
) -> Iterator[Runner]:
    """Context manager yielding a :class:`Runner` for ``scheduler`` (see the module docstring).

    Parameters
    ----------
    scheduler : str or distributed.Client
        ``"sync"``, ``"local"``, ``"tcp://host:port"`` (any ``scheme://``), or a client.
    n_workers : int, optional
        Workers of a local cluster (default: the available cores).
    memory_limit : str or int
        Per-worker memory limit of a local cluster (dask syntax: ``"auto"``, ``"2GiB"``, bytes).
    """
    if scheduler is None or scheduler == "sync":
        yield Runner()
        return
    if not isinstance(scheduler, str):  # an existing Client
        yield DaskRunner(scheduler, f"client {getattr(scheduler, 'scheduler', scheduler)}")
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise missing_dependency("distributed", pip_name="dask[distributed]") from exc
    # distributed sets its own loggers to INFO on import; keep its chatter out of our logs unless -vv
    if not logger.isEnabledFor(logging.DEBUG):
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if scheduler == "local":
        workers = int(n_workers or available_cores())
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                memory_limit=memory_limit,
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            logger.info("dask LocalCluster with %d worker process(es) started", workers)
            yield DaskRunner(client, f"LocalCluster({workers} workers x 1 thread)")
        return
    check_scheduler(scheduler)
    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot connect to dask scheduler {scheduler}: {exc}; is `dask scheduler` running?") from exc
    with client:
        logger.info("connected to dask scheduler %s", scheduler)
        yield DaskRunner(client, f"scheduler {scheduler}")


__all__ = ["DaskRunner", "Outcome", "Runner", "available_cores", "check_scheduler", "open_runner"]
