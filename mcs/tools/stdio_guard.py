"""Every line on the MCP server's stdin gets an answer: the lines the SDK would drop without a word are answered
here with a JSON-RPC error, and the server reads on.

The SDK's stdio transport replaces undecodable bytes silently and hands a line it cannot parse to the session as an
exception, which answers nothing; a line nested 10,000 deep or holding a 5,000-digit integer is not answered either.
This guard sits between stdin and the SDK: each line must be UTF-8, JSON, nested at most ``MCS_MAX_JSON_DEPTH``
deep, with integers of at most Python's digit limit and no lone surrogate; a line that breaks a rule is answered
with a parse error (-32700) or an invalid request (-32600) naming the rule, with the request's id where one could be
read, and is not passed on. Stdout stays the protocol: the SDK's writes and these answers share one lock, a line
each.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.server import stdio as sdk_stdio

log = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_ID = re.compile(r'"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,200}")')


class RefusedLine(Exception):
    def __init__(self, code: int, rule: str, request_id: Any = None) -> None:
        super().__init__(rule)
        self.code, self.rule, self.request_id = code, rule, request_id


def nesting_depth(text: str) -> int:
    """How deep ``[`` and ``{`` nest in a JSON text, outside strings (a scan: no recursion, however deep)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def check_line(raw: bytes, max_depth: int, max_int_digits: int) -> str | None:
    """The line as text when it may go on to the SDK; None for a blank line; RefusedLine when it breaks a rule."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise RefusedLine(PARSE_ERROR, f"not UTF-8 (byte {exc.start}): every line must be UTF-8 JSON") from None
    if not text:
        return None
    if text.count("[") + text.count("{") > max_depth and nesting_depth(text) > max_depth:
        raise RefusedLine(INVALID_REQUEST, f"nested deeper than {max_depth} (MCS_MAX_JSON_DEPTH)", _guess_id(text))

    def parse_int(digits: str) -> int:
        if len(digits.lstrip("-")) > max_int_digits:
            raise ValueError(f"an integer of more than {max_int_digits} digits")
        return int(digits)

    # Python's own int() refuses more digits than sys.get_int_max_str_digits(): a hook (slower, called for every
    # integer of every request) only for a lower limit.
    hook = parse_int if max_int_digits < (sys.get_int_max_str_digits() or max_int_digits + 1) else None
    try:
        message = json.loads(text, parse_int=hook)
    except RecursionError:
        raise RefusedLine(INVALID_REQUEST, f"nested deeper than {max_depth}", _guess_id(text)) from None
    except ValueError as exc:
        code = INVALID_REQUEST if "digits" in str(exc) else PARSE_ERROR
        raise RefusedLine(code, f"not valid JSON: {str(exc)[:200]}", _guess_id(text)) from None
    if _SURROGATE_ESCAPE.search(text):
        request_id = message.get("id") if isinstance(message, dict) else None
        try:
            json.dumps(message, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise RefusedLine(INVALID_REQUEST, "a lone surrogate (\\ud800-\\udfff) is not text", request_id) from None
    return text


def _guess_id(text: str) -> Any:
    match = _ID.search(text[:2000])
    if match is None:
        return None
    try:
        return json.loads(match.group(1))
    except ValueError:
        return None


def error_line(refused: RefusedLine) -> str:
    request_id = refused.request_id if isinstance(refused.request_id, int | str) else None
    error = {"code": refused.code, "message": f"refused: {refused.rule}", "data": {"error": "invalid_input"}}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}) + "\n"


class LockedOutput:
    """Stdout for the SDK and the guard alike: one whole line at a time."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lock = anyio.Lock()

    async def write(self, text: str) -> None:
        async with self._lock:
            await self._stream.write(text)
            await self._stream.flush()

    async def flush(self) -> None:
        pass  # every write flushed already, under the lock


class GuardedInput:
    """The stdin lines the SDK may see; the others are answered on ``output`` and dropped."""

    def __init__(self, source: Any, output: LockedOutput, max_depth: int, max_int_digits: int) -> None:
        self._source, self._output = source, output
        self._max_depth, self._max_int_digits = max_depth, max_int_digits

    async def __aiter__(self) -> AsyncIterator[str]:
        async for raw in self._source:
            try:
                text = check_line(raw, self._max_depth, self._max_int_digits)
            except RefusedLine as refused:
                log.info("refused a stdin line: %s", refused.rule)
                await self._output.write(error_line(refused))
                continue
            if text is not None:
                yield text + "\n"


@asynccontextmanager
async def guarded_stdio(max_depth: int, max_int_digits: int | None = None):
    """The SDK's stdio transport over guarded streams. The SDK claims fd 0 and 1 (handlers' stray output misses the
    wire) only for its own streams, so the same claim is made here with its helper (mcp pinned at 2.3.0)."""
    digits = max_int_digits or sys.get_int_max_str_digits() or 4300
    stdin_buffer, restore_stdin = sdk_stdio._claim_fd(0, sys.stdin, "rb", sdk_stdio._open_stdin_diversion)
    stdout_buffer, restore_stdout = sdk_stdio._claim_fd(1, sys.stdout, "wb", sdk_stdio._open_stdout_diversion)
    try:
        text_out = sdk_stdio._UnownedTextWrapper(stdout_buffer, encoding="utf-8")
        output = LockedOutput(anyio.wrap_file(text_out))
        source = GuardedInput(anyio.wrap_file(stdin_buffer), output, max_depth, digits)
        async with sdk_stdio.stdio_server(stdin=source, stdout=output) as streams:  # type: ignore[arg-type]
            yield streams
    finally:
        if restore_stdout is not None:
            restore_stdout()
        if restore_stdin is not None:
            restore_stdin()
