"""Start real `textq` processes on loopback and stop them, keeping their logs for failures."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

STOP_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int | None = signal.SIGTERM) -> int:
        """Signal the process (unless `sig` is None) and wait for it; kill it if it hangs."""
        if sig is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"{self.name} did not stop within {STOP_TIMEOUT_S} s") from None


def start(
    name: str, args: list[str], env: dict[str, str], logs: Path, *, own_group: bool = False
) -> Process:
    """Run `textq <args>` with `env` added to this environment, logging to a file.

    With `own_group`, the process leads a process group, as a command typed in a terminal
    does, so a test can send the whole group Ctrl-C.
    """
    return start_command(name, ["-m", "textq", *args], env, logs, own_group=own_group)


def start_command(
    name: str, args: list[str], env: dict[str, str], logs: Path, *, own_group: bool = False
) -> Process:
    """Run `python <args>` like `start` does."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("wb") as handle:
        popen = subprocess.Popen(
            [sys.executable, *args],
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=own_group,
        )
    return Process(name=name, popen=popen, log=log)


def wait_until_ready(base_url: str, processes: list[Process], timeout_s: float = 60) -> None:
    """Wait for /readyz; fail with the processes' logs if one dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.popen.poll() is not None:
                raise AssertionError(f"{process.name} exited early:\n{process.output()}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    logs = "\n".join(f"--- {p.name}\n{p.output()}" for p in processes)
    raise AssertionError(f"not ready after {timeout_s} s\n{logs}")


@dataclass
class Service:
    """An API and a worker running as separate processes against one backend."""

    base_url: str
    env: dict[str, str]
    logs: Path
    headers: dict[str, str] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)

    def logs_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()}" for p in self.processes)


def into_closed_pipe(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run `textq ARGS` with its stdout closed before it starts, as `textq … | head` ends up
    when `head` has gone; return its exit status and what it wrote to stderr."""
    with subprocess.Popen(
        [sys.executable, "-m", "textq", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as reader:
        assert reader.stdout is not None and reader.stderr is not None
        reader.stdout.close()  # before textq has started: its first write finds no reader
        stderr = reader.stderr.read().decode()
        return reader.wait(60), stderr
