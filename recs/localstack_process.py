"""Processes on loopback for the embedded stack: free ports, waiting for a port or a state,
stopping a process (SIGTERM, then SIGKILL), and ``recs`` commands run as real subprocesses
with JSON logs (recs/localstack.py, recs/localstack_kafka.py, tests, benchmarks, the demo)."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on {LOOPBACK}:{port} within {timeout}s")


def end_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM,
         timeout: float = 10) -> int | None:
    """Send a running ``proc`` ``sig`` and reap it; SIGKILL if it has not exited within
    ``timeout`` seconds. SIGTERM is each server's clean shutdown; SIGKILL is a crash.
    The exit code, or None without a process."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate()`` until it returns something truthy (returned) or ``timeout``
    seconds pass (TimeoutError naming ``what``). For tests and the demo: wait for a state,
    never sleep for one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout}s")
        time.sleep(interval)


@dataclass
class RecsProcess:
    """One ``recs`` command run as a real subprocess (so SIGTERM/SIGKILL are real), logging
    JSON lines to ``log_path`` for tests to read."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> RecsProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recs.cli", *self.args, "--log-format", "json"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    def send(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: a crash at whatever point the process has reached."""
        end_process(self.proc, signal.SIGKILL)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (what Docker and Kubernetes send), then wait for the exit code; SIGKILL if
        it takes longer than ``timeout``."""
        return end_process(self.proc, signal.SIGTERM, timeout)

    def check_alive(self, doing: str = "") -> None:
        """RuntimeError with the end of its log if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"recs {self.args[0]} exited with {self.proc.returncode}"
                               f"{' while ' + doing if doing else ''}:\n{tail}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def records(self) -> list[dict]:
        """The JSON log records written so far (other lines, e.g. librdkafka's, skipped)."""
        out = []
        with contextlib.suppress(FileNotFoundError), open(self.log_path, "rb") as fh:
            for line in fh:
                if line.startswith(b"{"):
                    with contextlib.suppress(ValueError):
                        out.append(json.loads(line))
        return out

    def wait_for_log(self, msg: str, timeout: float = 30, where=None) -> dict:
        """The first record whose message starts with ``msg`` (and satisfies ``where``)."""
        def found():
            exited = self.proc is not None and self.proc.poll() is not None
            record = next((r for r in self.records() if r.get("msg", "").startswith(msg)
                           and (where is None or where(r))), None)
            if record is None and exited:
                self.check_alive(f"waiting for {msg!r}")
            return record
        return wait_until(found, timeout, f"log {msg!r} from recs {self.args[0]}")
