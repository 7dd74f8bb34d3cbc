"""What a task's life cycle carries besides its metadata: the test cases that gate each deploy of it, its retry
policy, and the history of its versions (what served when, which tests passed).

A test case is ``{args, kwargs, expect}`` or ``{args, kwargs, expect_error: "ValueError"}``; ``expect`` compares
with the JSON the task returned. A retry policy names exception classes (``ConnectionError``, or dotted
``requests.exceptions.ConnectionError``): a call raising one of them (or a subclass) is tried again after
``backoff_s * 2**n`` seconds (at most ``backoff_max_s``), up to ``max_retries`` times.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from mcs.core.errors import InvalidInput

MAX_TEST_CASES = 20  # per folder: each runs against the new version before it takes calls
MAX_RETRIES = 20
MAX_BACKOFF_S = 3600.0
MAX_EXCEPTION_NAMES = 20
_EXCEPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
EXCEPTION_NAME_RULE = "an exception class name, e.g. 'ValueError' or 'requests.exceptions.ConnectionError'"


_VERSION_REF = re.compile(r"[0-9a-f]{6,64}")
VERSION_RULE = "a version from list_task_versions: 6 to 64 lowercase hex characters (a unique prefix will do)"


def check_version_ref(value: Any, field: str = "version") -> str:
    if not isinstance(value, str) or not _VERSION_REF.fullmatch(value):
        raise InvalidInput(field, value, VERSION_RULE)
    return value


class TestCase(BaseModel):
    """One check a new version must pass before it takes calls: call ``task`` with ``args`` and ``kwargs``; the
    result must equal ``expect``, or the call must raise ``expect_error`` (the exception's class name)."""

    __test__ = False  # not a pytest class
    model_config = ConfigDict(extra="forbid")

    task: str | None = Field(None, description="the task of the folder to call; default: the folder's main task")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    expect: Any = None
    expect_error: str | None = None
    timeout_s: float = Field(30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _one_expectation(self) -> TestCase:
        # ValueError, not InvalidInput: pydantic then names the case (tests[2]) through parse_model.
        has_expect = "expect" in self.model_fields_set
        if has_expect == (self.expect_error is not None):
            raise ValueError("a test case needs exactly one of expect (the result) or expect_error (an exception name)")
        if self.expect_error is not None and not _EXCEPTION_NAME.fullmatch(self.expect_error):
            raise ValueError(f"expect_error must be {EXCEPTION_NAME_RULE}")
        return self

    @property
    def expects_error(self) -> bool:
        return self.expect_error is not None

    def public(self) -> dict[str, Any]:
        """The case as the caller wrote it (``expect`` kept even when it is null)."""
        data = self.model_dump(mode="json", exclude_defaults=True, exclude={"expect"})
        if not self.expects_error:
            data["expect"] = self.expect
        return data


class RetryPolicy(BaseModel):
    """Try a call again when it raises one of ``on`` (or a subclass): up to ``max_retries`` more times, after
    ``backoff_s * 2**attempt`` seconds, at most ``backoff_max_s``."""

    model_config = ConfigDict(extra="forbid")

    on: list[str] = Field(min_length=1, max_length=MAX_EXCEPTION_NAMES)
    max_retries: int = Field(3, ge=1, le=MAX_RETRIES)
    backoff_s: float = Field(1.0, ge=0, le=MAX_BACKOFF_S)
    backoff_max_s: float = Field(60.0, ge=0, le=MAX_BACKOFF_S)

    @field_validator("on")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if len(name) > 200 or not _EXCEPTION_NAME.fullmatch(name):
                raise ValueError(f"{name[:60]!r} is not {EXCEPTION_NAME_RULE}")
        return names

    def countdown(self, retries_so_far: int) -> float:
        return min(self.backoff_max_s, self.backoff_s * 2**retries_so_far)


class CaseOutcome(BaseModel):
    """One test case's run against a new version."""

    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    passed: bool
    expected: Any = None
    expected_error: str | None = None
    got: Any = None
    got_error: str | None = None
    traceback: str | None = None
    elapsed_ms: float = 0.0


class TestRun(BaseModel):
    """The test cases of one version, run once it answered and before it took calls."""

    __test__ = False
    ran_at: datetime
    total: int
    passed: int
    failed: int
    cases: list[CaseOutcome] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0


class VersionEntry(BaseModel):
    """One version of a task in its history: what it is, how it was deployed, whether its tests passed."""

    model_config = ConfigDict(extra="allow")

    version: str
    deployed_at: datetime
    status: str = Field(description="serving, kept (can be rolled back to), refused (its tests failed), or removed")
    image: str | None = None
    serve_queue: str | None = None
    tests: TestRun | None = None
    #: The folder's task records (metadata only) and its deploy options: what a rollback registers again.
    tasks: list[dict[str, Any]] = Field(default_factory=list)
    cases: list[TestCase] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    dockerfile: str | None = None

    @field_serializer("cases")
    def _cases(self, cases: list[TestCase]) -> list[dict[str, Any]]:
        return [case.public() for case in cases]  # read back as written: expect or expect_error, never both
