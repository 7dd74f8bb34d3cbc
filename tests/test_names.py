"""Name rules: one strict rule for task and queue names, messages that name the value and the rule."""

from __future__ import annotations

import pytest

from mcs.core.errors import InvalidInput
from mcs.core.names import (
    NAME_RULE,
    validate_category,
    validate_description,
    validate_identifier,
    validate_name,
)

pytestmark = pytest.mark.unit

BAD_NAMES = [
    "../../etc",
    "a;rm -rf /",
    "$(id)",
    "Foo",
    "",
    "a" * 300,
    "ａｄｄ",  # fullwidth lookalikes
    "__init__",
    "_private",
    "1abc",
    "add-numbers",
    "add numbers",
    "add\n",
    "add\x00",
    "-rf",
    "class",
    "a" * 64,
    "add/../x",
    "%2e%2e",
]


@pytest.mark.parametrize("value", BAD_NAMES)
def test_bad_names_are_rejected_with_the_rule(value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_name(value)
    message = str(info.value)
    assert "task_name" in message
    assert NAME_RULE in message
    assert info.value.rule == NAME_RULE


@pytest.mark.parametrize("value", [None, 3, ["add"], b"add"])
def test_non_strings_are_rejected(value: object) -> None:
    with pytest.raises(InvalidInput, match="expected a string"):
        validate_name(value)


@pytest.mark.parametrize("value", ["add", "simple_add", "a", "a" * 63, "mongodb_operation", "q1"])
def test_good_names_pass(value: str) -> None:
    assert validate_name(value) == value


def test_field_name_is_reported() -> None:
    with pytest.raises(InvalidInput, match="invalid queue"):
        validate_name("Bad", "queue")


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_name("a" * 300)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("value", ["general", "data-processing", "db_2"])
def test_categories(value: str) -> None:
    assert validate_category(value) == value


@pytest.mark.parametrize("value", ["", "Database", "a/b", "x" * 65, "数据库"])
def test_bad_categories(value: str) -> None:
    with pytest.raises(InvalidInput, match="category"):
        validate_category(value)


@pytest.mark.parametrize("value", ["a", "CamelCase", "_x", "x1"])
def test_identifiers(value: str) -> None:
    assert validate_identifier(value, "parameter name") == value


@pytest.mark.parametrize("value", ["class", "1x", "a-b", "ｘ", "", "a b"])
def test_bad_identifiers(value: str) -> None:
    with pytest.raises(InvalidInput, match="parameter name"):
        validate_identifier(value, "parameter name")


def test_description_is_bounded() -> None:
    assert validate_description("两数相加") == "两数相加"
    with pytest.raises(InvalidInput, match="at most 2000"):
        validate_description("x" * 2001)


@pytest.mark.parametrize("value", ["unacked", "unacked_index", "unacked_mutex"])
def test_kombu_bookkeeping_names_are_not_queues(value: str) -> None:
    from mcs.core.names import validate_queue

    assert validate_name(value) == value  # a fine task name
    with pytest.raises(InvalidInput, match="reserved by the broker"):
        validate_queue(value)
