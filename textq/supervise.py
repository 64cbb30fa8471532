"""Run `textq up`'s child processes beside its API: restart one that dies, stop them all on
Ctrl-C or SIGTERM, and make sure none outlives `up`, even when `up` is killed outright."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import typer

STOP_TIMEOUT_S = 120
RESTART_WINDOW_S = 60
MAX_RESTARTS_IN_WINDOW = 3
# How long a child's exit waits for a stop of `up` to show: Ctrl-C in a terminal reaches `up`
# and its children at the same moment, and a child may finish exiting first.
EXIT_GRACE_S = 1.0
# Set in a child's environment: the pid of the `up` it must not outlive.
SUPERVISOR_PID_ENV = "TEXTQ_SUPERVISOR_PID"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 1.0


class Server(Protocol):
    """What `serve_beside` needs of the API server (a `uvicorn.Server`)."""

    should_exit: bool

    def run(self) -> None: ...


def describe_exit(returncode: int) -> str:
    """Say how a child ended, from `Popen.returncode`.

    A negative code is the signal that killed it ("was killed by SIGKILL"); any other is its
    exit status ("exited with status 1").
    """
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


class WorkerSupervisor:
    """Runs `textq <command>` and restarts it when it exits on its own (a crash, a kill -9).

    Each child is started by the supervisor's own watcher thread, which lives until that child
    has exited: a child's parent-death signal (see `exit_with_supervisor`) belongs to the
    thread that started it, so it must not fire while `up` lives.
    """

    def __init__(
        self,
        command: str,
        on_give_up: Callable[[], None],
        *,
        stopping: threading.Event | None = None,
        stop_requested: Callable[[], bool] = lambda: False,
    ) -> None:
        self.command = command
        self.on_give_up = on_give_up
        self.gave_up = False
        self._stopping = stopping or threading.Event()
        self._stop_requested = stop_requested
        self._process: subprocess.Popen[bytes] | None = None
        self._started = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._watch, name=f"textq-supervise-{command}", daemon=True
        )

    def start(self) -> None:
        """Start the child (from the watcher thread) and return once it runs."""
        self._thread.start()
        self._started.wait()

    def _spawn(self) -> bool:
        """Start the child unless a stop has begun; return whether it started."""
        with self._lock:
            if self._stopping.is_set():
                return False
            self._process = subprocess.Popen(
                [sys.executable, "-m", "textq", self.command],
                env={**os.environ, SUPERVISOR_PID_ENV: str(os.getpid())},
            )
            return True

    def _stopping_soon(self) -> bool:
        """Wait up to EXIT_GRACE_S for a stop; return whether one began."""
        deadline = time.monotonic() + EXIT_GRACE_S
        while not (self._stopping.is_set() or self._stop_requested()):
            if time.monotonic() >= deadline:
                return False
            self._stopping.wait(0.05)
        return True

    def _watch(self) -> None:
        recent: list[float] = []
        try:
            if not self._spawn():
                return
        finally:
            self._started.set()
        while True:
            assert self._process is not None
            code = self._process.wait()
            if self._stopping_soon():
                return
            now = time.monotonic()
            recent = [t for t in recent if now - t < RESTART_WINDOW_S] + [now]
            if len(recent) > MAX_RESTARTS_IN_WINDOW:
                typer.echo(
                    f"textq: the {self.command} keeps exiting (it {describe_exit(code)}); stopping",
                    err=True,
                )
                self.gave_up = True
                self.on_give_up()
                return
            typer.echo(f"textq: the {self.command} {describe_exit(code)}; restarting it", err=True)
            if self._stopping.wait(max(0, len(recent) - EXIT_GRACE_S)) or not self._spawn():
                return

    def terminate(self) -> subprocess.Popen[bytes] | None:
        """Mark this supervisor stopping and ask its child to finish; return the live child."""
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is None or process.poll() is not None:
            return None
        process.send_signal(signal.SIGTERM)
        return process


def stop_all(
    supervisors: Sequence[WorkerSupervisor],
    hurry: threading.Event | None = None,
    timeout_s: float = STOP_TIMEOUT_S,
) -> None:
    """Stop every supervisor's child at once: SIGTERM (the worker ends its batch and hands
    back its claim), then SIGKILL for any still running after `timeout_s` or once `hurry` is set.
    """
    hurry = hurry or threading.Event()
    deadline = time.monotonic() + timeout_s
    running = [p for p in (s.terminate() for s in supervisors) if p is not None]
    for process in running:
        while process.poll() is None:
            if hurry.is_set() or time.monotonic() >= deadline:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(0.1)


def serve_beside(server: Server, commands: Sequence[str]) -> list[str]:
    """Run `server` in this thread and one supervised `textq <command>` per command beside it.

    Runs until Ctrl-C, SIGTERM (the same thing here: what systemd, Docker and `kill` send), or
    a child that cannot stay up; then stops the API and every child (a second Ctrl-C or
    SIGTERM kills the children instead of waiting). Returns the commands whose supervisor
    gave up, empty after an ordinary stop.
    """
    # uvicorn shuts down on SIGTERM, then re-raises it with the handler it found: this one
    # makes it the KeyboardInterrupt a Ctrl-C is, so both end below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    stopping = threading.Event()

    def give_up() -> None:
        server.should_exit = True

    supervisors = [
        WorkerSupervisor(
            command, give_up, stopping=stopping, stop_requested=lambda: server.should_exit
        )
        for command in commands
    ]
    try:
        for supervisor in supervisors:
            supervisor.start()
        server.run()
    except KeyboardInterrupt:
        pass  # stopping is what was asked
    finally:
        stopping.set()
        hurry = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: hurry.set())
        stop_all(supervisors, hurry)
    return [supervisor.command for supervisor in supervisors if supervisor.gave_up]


def exit_with_supervisor() -> None:
    """In a child of `textq up`, arrange a SIGTERM for this process when `up` dies, however.

    `up` puts its pid in TEXTQ_SUPERVISOR_PID (removed here, so nothing this process starts
    inherits it). On Linux the kernel sends the signal (PR_SET_PDEATHSIG); elsewhere a thread
    checks the parent once a second. Exits at once if `up` is already gone.
    """
    supervisor = os.environ.pop(SUPERVISOR_PID_ENV, None)
    if not supervisor:
        return
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            _watch_parent(int(supervisor))
    else:
        _watch_parent(int(supervisor))
    if os.getppid() != int(supervisor):  # `up` died before the signal was arranged
        raise SystemExit(0)


def _watch_parent(parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="textq-parent-watch", daemon=True).start()
