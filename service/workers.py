"""`OEGATE_WORKERS=N` (N > 1): one supervisor process and N worker processes serving the same port.

Why a supervisor of our own, with SO_REUSEPORT, rather than uvicorn's `workers=N`:
- uvicorn's workers accept from one listening socket they share: whichever process wakes first takes the next
  connection, so with keep-alive clients the connections (and the load) can pile onto one worker. Here each worker
  opens its own listening socket with SO_REUSEPORT and the kernel spreads new connections over the workers by a hash
  of each connection's addresses and ports. (Linux lets only sockets of the same user share a port this way.)
- A worker listens only once its lifespan has loaded the models: the kernel never hands a connection to a worker
  that is still starting or restarting.
- uvicorn's multiprocess mode re-imports the app from an import string and pickles its config; ours is built by
  `create_app(settings)` with a protocol class made at run time (service/server.py).
- The supervisor owns a fresh temporary state directory per start, removed at the end: the Prometheus
  multiprocess directory (each exited worker marked dead in it, so its live gauges stop counting;
  service/multiprocess_metrics.py) and the pin file every worker serves (service/shared_pins.py).

Lifecycle:
- Start: the supervisor checks that nothing listens on the port (a plain bind: a second oegate on the same port
  would otherwise silently share it), makes the metrics directory and starts N workers with multiprocessing's
  `spawn` (each imports the service afresh: no threads or sessions inherited through fork). The supervisor itself
  never imports the app or loads a model.
- A worker that exits while the service runs is restarted after `RESTART_DELAY_S`; one that could not start (exit
  status 3: its port or its app failed) stops the service with status 3, as one process would.
- SIGTERM (or SIGINT) to the supervisor: SIGTERM to every worker, each of which shuts down gracefully (requests in
  flight get `timeout_graceful_shutdown_s`, then its micro-batchers drain); a worker still running
  `STOP_MARGIN_S` after that is killed. Then the metrics directory is removed and the supervisor ends by the same
  signal, so its exit status says why it stopped (as uvicorn's does).
- Each worker asks Linux to SIGTERM it when the supervisor dies (PR_SET_PDEATHSIG): a killed supervisor leaves no
  worker serving behind it (the workers shut down gracefully; only the temporary state directory stays behind,
  since nothing runs to remove it after a SIGKILL).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import tempfile
import time
from multiprocessing.context import SpawnProcess
from pathlib import Path
from types import FrameType

from service.logs import configure_logging
from service.settings import Settings
from service.shared_pins import SharedPins

logger = logging.getLogger(__name__)

FAILED_START = 3
"""Exit status of a server that could not start (uvicorn.run's, and `python -m service`'s)."""
RESTART_DELAY_S = 1.0
"""Pause before a crashed worker is started again (a worker crashing at once does not spin the CPU)."""
STOP_MARGIN_S = 10.0
"""Seconds past `timeout_graceful_shutdown_s` a worker may take to drain and exit before it is killed."""
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening (uvicorn's `create_server` starts listening)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def run_worker(settings: Settings, index: int, supervisor_pid: int, shared_pins: Path) -> None:
    """One worker process: the app on its own SO_REUSEPORT socket, its pins from `shared_pins` (multiprocessing's
    target; exits 3 when it cannot start)."""
    _die_with(supervisor_pid)
    configure_logging(settings.log_level, {"worker": index, "pid": os.getpid()})
    from service.server import serve  # here, not at import: the supervisor never loads the app

    try:
        sock = listening_socket(settings.host, settings.port, reuse_port=True)
    except OSError as e:
        logger.error("worker cannot bind %s:%d: %s", settings.host, settings.port, e)
        sys.exit(FAILED_START)
    if not serve(settings, sockets=[sock], shared_pins=shared_pins):
        sys.exit(FAILED_START)


def _die_with(supervisor_pid: int) -> None:
    """SIGTERM this process when its parent (the supervisor) dies; exit at once if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor_pid:
        os._exit(0)


class Supervisor:
    """Starts `settings.workers` workers, restarts those that crash, stops them all on SIGTERM or SIGINT."""

    def __init__(self, settings: Settings, metrics_dir: Path, shared_pins: Path) -> None:
        self._settings = settings
        self._metrics_dir = metrics_dir
        self._shared_pins = shared_pins
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, SpawnProcess] = {}
        self.stop_signal: signal.Signals | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signal.Signals(signum)

    def _start(self, index: int) -> None:
        process = self._context.Process(
            target=run_worker,
            args=(self._settings, index, os.getpid(), self._shared_pins),
            name=f"oegate-worker-{index}",
        )
        process.start()
        self._workers[index] = process
        logger.info("worker started", extra={"worker_index": index, "worker_pid": process.pid})

    def run(self) -> int:
        """Serve until a stop signal (0) or a worker that cannot start (3); the workers are stopped either way."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        status = 0
        try:
            for index in range(self._settings.workers):
                self._start(index)
            while self.stop_signal is None and status == 0:
                multiprocessing.connection.wait([p.sentinel for p in self._workers.values()], timeout=0.5)
                status = self._check_workers()
        finally:
            self._stop_all()
        return status

    def _check_workers(self) -> int:
        for index, process in list(self._workers.items()):
            if process.exitcode is None or self.stop_signal is not None:
                continue
            self._mark_dead(process)
            if process.exitcode == FAILED_START:
                logger.error("worker could not start: stopping the service", extra={"worker_index": index})
                return FAILED_START
            logger.error(
                "worker exited; restarting it",
                extra={"worker_index": index, "worker_pid": process.pid, "exit_code": process.exitcode},
            )
            time.sleep(RESTART_DELAY_S)
            if self.stop_signal is None:
                self._start(index)
        return 0

    def _stop_all(self) -> None:
        running = [p for p in self._workers.values() if p.exitcode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid or 0, signal.SIGTERM)
        deadline = time.monotonic() + self._settings.timeout_graceful_shutdown_s + STOP_MARGIN_S
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                logger.warning("worker did not stop in time: killing it", extra={"worker_pid": process.pid})
                process.kill()
                process.join()
        for process in self._workers.values():
            self._mark_dead(process)
        logger.info("all workers stopped", extra={"workers": len(self._workers)})

    def _mark_dead(self, process: SpawnProcess) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        if process.pid is not None:
            mark_process_dead(process.pid, str(self._metrics_dir))


def supervise(settings: Settings) -> int:
    """`python -m service` with `settings.workers` > 1: the exit status (0 or 3), or the stop signal re-raised."""
    configure_logging(settings.log_level, {"worker": "supervisor", "pid": os.getpid()})
    try:
        listening_socket(settings.host, settings.port, reuse_port=False).close()
    except OSError as e:
        logger.error("cannot bind %s:%d: %s", settings.host, settings.port, e)
        return FAILED_START
    with tempfile.TemporaryDirectory(prefix="oegate-workers-") as state:
        metrics_dir, pins = Path(state) / "metrics", SharedPins(Path(state) / "pins.json")
        metrics_dir.mkdir()
        pins.write(dict(settings.pin))  # OEGATE_PIN; the admin API changes the file (service/shared_pins.py)
        # prometheus-client reads it when first imported: in the workers, which inherit this environment.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        supervisor = Supervisor(settings, metrics_dir, pins.path)
        logger.info("supervisor starting workers", extra={"workers": settings.workers, "state_dir": state})
        status = supervisor.run()
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if status == 0 and supervisor.stop_signal is not None:
        signal.signal(supervisor.stop_signal, signal.SIG_DFL)
        signal.raise_signal(supervisor.stop_signal)
    return status
