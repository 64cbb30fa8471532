"""Keep `textq up`'s worker processes running: restart one that dies, stop them on the way out."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import typer

STOP_TIMEOUT_S = 120
RESTART_WINDOW_S = 60
MAX_RESTARTS_IN_WINDOW = 3


class WorkerSupervisor:
    """Runs `textq <command>` and restarts it when it exits on its own (a crash, a kill -9)."""

    def __init__(self, command: str, on_give_up: Callable[[], None]) -> None:
        self.command = command
        self.on_give_up = on_give_up
        self.gave_up = False
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="textq-supervise", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _spawn(self) -> None:
        with self._lock:
            self._process = subprocess.Popen([sys.executable, "-m", "textq", self.command])

    def _watch(self) -> None:
        recent: list[float] = []
        while not self._stopping.is_set():
            assert self._process is not None
            code = self._process.wait()
            if self._stopping.is_set():
                return
            now = time.monotonic()
            recent = [t for t in recent if now - t < RESTART_WINDOW_S] + [now]
            if len(recent) > MAX_RESTARTS_IN_WINDOW:
                typer.echo(
                    f"textq: the {self.command} keeps exiting (status {code}); stopping", err=True
                )
                self.gave_up = True
                self.on_give_up()
                return
            typer.echo(
                f"textq: the {self.command} exited with status {code}; restarting it", err=True
            )
            if self._stopping.wait(len(recent)):
                return
            self._spawn()

    def stop(self) -> None:
        """Ask the process to finish its work and stop; kill it if it does not in time."""
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
