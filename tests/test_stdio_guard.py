"""Every line on the server's stdin is answered within 1 s, and the server serves the next request: malformed JSON,
bytes that are not UTF-8, a lone surrogate, nesting 10,000 deep, a 5,000-digit integer."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcs.stack import process_env
from mcs.tools.stdio_guard import INVALID_REQUEST, PARSE_ERROR, RefusedLine, check_line, nesting_depth
from tests.helpers import make_settings
from tests.mcp_clients import SERVER_SCRIPT

BAD_LINES = {
    "not JSON": (b"this is not json", PARSE_ERROR),
    "not UTF-8": (b'{"jsonrpc": "2.0", "id": 7, "method": "ping", "x": "\xff\xfe"}', PARSE_ERROR),
    "lone surrogate": (b'{"jsonrpc": "2.0", "id": 8, "method": "ping", "params": {"x": "\\ud800"}}', INVALID_REQUEST),
    "10,000 deep": (b'{"jsonrpc": "2.0", "id": 9, "method": "ping", "params": {"x": ' + b"[" * 10_000 + b"]" * 10_000
                    + b"}}", INVALID_REQUEST),
    "5,000 digits": (b'{"jsonrpc": "2.0", "id": 10, "method": "ping", "params": {"x": ' + b"9" * 5000 + b"}}",
                     INVALID_REQUEST),
    "truncated": (b'{"jsonrpc": "2.0", "id": 11, "method": "pi', PARSE_ERROR),
}  # fmt: skip


@pytest.mark.unit
@pytest.mark.parametrize("name", list(BAD_LINES))
def test_each_bad_line_is_refused_with_a_rule(name: str) -> None:
    raw, code = BAD_LINES[name]
    with pytest.raises(RefusedLine) as refused:
        check_line(raw, max_depth=64, max_int_digits=4300)
    assert refused.value.code == code and refused.value.rule


@pytest.mark.unit
def test_good_lines_pass_unchanged_and_depth_counts_outside_strings() -> None:
    line = b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"s": "[[[[[{{{{"}}'
    assert check_line(line, 3, 4300) == line.decode()
    assert check_line(b"   \n", 64, 4300) is None
    assert nesting_depth('{"a": [1, {"b": "]]]["}]}') == 3


class RawServer:
    def __init__(self, tmp_path: Path) -> None:
        env = process_env(make_settings(tmp_path))
        self.proc = subprocess.Popen([sys.executable, str(SERVER_SCRIPT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)  # fmt: skip
        self.buffer = b""

    def send(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def answer(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0, "no answer in time"
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
                assert chunk, "the server closed stdout"
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.mark.integration
def test_every_line_is_answered_within_a_second_and_the_next_is_served(tmp_path: Path) -> None:
    server = RawServer(tmp_path)
    try:
        params = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
        server.send(json.dumps(init).encode())
        assert server.answer(30)["id"] == 0
        server.send(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
        for number, (name, (raw, code)) in enumerate(BAD_LINES.items(), start=100):
            started = time.monotonic()
            server.send(raw)
            answer = server.answer(1.0)
            assert answer["error"]["code"] == code and answer["error"]["message"].startswith("refused"), name
            assert time.monotonic() - started < 1.0, name
            server.send(json.dumps({"jsonrpc": "2.0", "id": number, "method": "ping"}).encode())
            assert server.answer(1.0) == {"jsonrpc": "2.0", "id": number, "result": {}}, name
    finally:
        server.close()
