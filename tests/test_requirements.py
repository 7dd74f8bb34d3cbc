"""The one grammar of requirement lines (``mcs.core.requirements``), read from a folder's requirements.txt.

Only pinned ``name[extras]==version`` lines pass: options, URLs, paths, markers, ranges and non-strings are refused
with the line named (``requirements line N``), so nothing else can reach pip in the image build.
"""

from __future__ import annotations

import pytest

from mcs.core.errors import InvalidInput
from mcs.core.requirements import check_requirements

MAX = 100


@pytest.mark.unit
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("six==1.16.0", "six==1.16.0"),
        ("  requests[socks, security]==2.32.3  ", "requests[security,socks]==2.32.3"),
        ("torch==2.13.0+cpu", "torch==2.13.0+cpu"),
        ("zope.interface==6.4.post2", "zope.interface==6.4.post2"),
        ("Pillow == 10.4.0", "Pillow==10.4.0"),
    ],
)
def test_valid_requirement_lines(line: str, expected: str) -> None:
    assert check_requirements([line, "", "# comment"], MAX, from_file=True) == [expected]


@pytest.mark.unit
@pytest.mark.parametrize(
    "line",
    [
        "-e .",
        "--index-url https://evil.example/simple",
        "-r other.txt",
        "--find-links /tmp",
        "six",
        "six>=1.0",
        "six==1.*",
        "six~=1.16",
        "six==1.16.0; python_version < '3.12'",
        "six @ https://evil.example/six.whl",
        "https://evil.example/six-1.16.0.whl",
        "./local/pkg",
        "/abs/six-1.16.0-py3-none-any.whl",
        "six==1.16.0 --hash=sha256:abc",
        "six==1.16.0 && rm -rf /",
        "six==1.16.0\x00",
        "x" * 300 + "==1.0",
    ],
)
def test_invalid_requirement_lines_are_refused(line: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_requirements([line], MAX, from_file=True)
    assert caught.value.field == "requirements line 1"


@pytest.mark.unit
def test_requirement_lines_must_be_strings() -> None:
    with pytest.raises(InvalidInput):
        check_requirements([b"six==1.16.0"], MAX, from_file=True)  # type: ignore[list-item]
