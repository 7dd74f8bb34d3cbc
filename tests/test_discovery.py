"""Discovery: get_available_tasks(query=...) ranking, compact and full listings, unknown categories.

The ranking itself (``mcs.search``) on records in memory; the tools through the SDK's in-memory client on fakeredis;
then the same over a real stdio client and a real Redis, as an agent in a fresh session would look before it builds.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from mcp import Client

from mcp_server import build_server
from mcs.core.errors import InvalidInput
from mcs.core.models import TaskRecord
from mcs.core.settings import Settings
from mcs.search import keywords, rank, stem, tokenize
from mcs.services import Services
from Redis.registry import MAX_NAMED_CATEGORIES, TaskRegistry
from tests.helpers import make_settings
from tests.mcp_clients import data, stdio_client

#: Six tasks an agent may find: (description, category, parameters as (name, type, description)).
TASKS: dict[str, tuple[str, str, list[tuple[str, str, str]]]] = {
    "simple_add": ("Adds two integers and returns their sum", "arithmetic", [("a", "int", ""), ("b", "int", "")]),
    "make_thumbnail": (
        "Resize an image (base64 PNG) to a thumbnail of at most size pixels, with Pillow",
        "images",
        [("image_b64", "str", "the image, base64"), ("size", "int", "longest side in pixels")],
    ),
    "slugify_text": ("Turn a title into a URL slug: lowercase words joined by dashes", "text", [("text", "str", "")]),
    "etl_extract": ("Extract records from a CSV document as a list of dicts", "etl", [("csv_text", "str", "CSV")]),
    "etl_transform": ("Clean records: drop the rows with missing values", "etl", [("records", "list", "rows")]),
    "compute_statistics": (
        "Mean, median and standard deviation of a list of numbers",
        "arithmetic",
        [("numbers", "list", "the values")],
    ),
}
QUERIES = {
    "thumbnail": "make_thumbnail",
    "resize an image": "make_thumbnail",
    "add two numbers": "simple_add",
    "url slug from a title": "slugify_text",
    "parse csv": "etl_extract",
    "median of numbers": "compute_statistics",
    "drop missing rows": "etl_transform",
}


def records() -> list[TaskRecord]:
    return [
        TaskRecord(
            name=name,
            description=description,
            category=category,
            parameters=[{"name": p, "type": t, "description": d} for p, t, d in params],
        )
        for name, (description, category, params) in TASKS.items()
    ]


def register_all(registry: TaskRegistry) -> None:
    for name, (description, category, params) in TASKS.items():
        registry.register(
            name=name,
            description=description,
            category=category,
            parameters=[{"name": p, "type": t, "description": d} for p, t, d in params],
            return_type="Any",
            queue=f"q_{name}",
        )


# -- the ranking ---------------------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("word", "stemmed"),
    [
        *[("files", "file"), ("boxes", "box"), ("entries", "entry"), ("classes", "class"), ("matches", "match")],
        *[("status", "status"), ("analysis", "analysis"), ("process", "process"), ("add", "add"), ("is", "is")],
    ],
)
def test_stem_drops_plural_endings_only(word: str, stemmed: str) -> None:
    assert stem(word) == stemmed


@pytest.mark.unit
def test_tokenize_splits_names_on_underscores_and_drops_stop_words() -> None:
    assert tokenize("make_thumbnail") == ["make", "thumbnail"]
    assert tokenize("Resize an image (base64 PNG) to a thumbnail") == ["resize", "image", "base64", "png", "thumbnail"]
    assert keywords("Resize the Images") == {"resize": "resize", "image": "images"}


@pytest.mark.unit
@pytest.mark.parametrize(("query", "expected"), list(QUERIES.items()))
def test_the_right_task_comes_first(query: str, expected: str) -> None:
    hits = rank(records(), query)
    assert hits and hits[0].record.name == expected, [(h.record.name, h.score) for h in hits]


@pytest.mark.unit
def test_a_name_match_outranks_a_description_match() -> None:
    tasks = [
        TaskRecord(name="resize_photo", description="makes a picture smaller"),
        TaskRecord(name="shrink_picture", description="resize a photo to half its size"),
    ]
    assert [h.record.name for h in rank(tasks, "resize")] == ["resize_photo", "shrink_picture"]


@pytest.mark.unit
def test_a_rare_word_weighs_more_than_a_common_one() -> None:
    tasks = [TaskRecord(name=f"task_{i}", description="convert data") for i in range(4)]
    tasks.append(TaskRecord(name="task_x", description="convert data to parquet"))
    hits = rank(tasks, "convert parquet")
    assert hits[0].record.name == "task_x" and hits[0].matched == ("convert", "parquet")
    assert all(h.matched == ("convert",) for h in hits[1:])


@pytest.mark.unit
def test_ties_go_by_name_and_tasks_matching_nothing_are_left_out() -> None:
    tasks = [TaskRecord(name=n, description="echo the value") for n in ("zeta", "alpha", "mid")]
    tasks.append(TaskRecord(name="other", description="unrelated"))
    hits = rank(tasks, "echo")
    assert [h.record.name for h in hits] == ["alpha", "mid", "zeta"]
    assert len({h.score for h in hits}) == 1


@pytest.mark.unit
def test_a_word_prefix_matches_at_half_weight() -> None:
    hits = rank([TaskRecord(name="make_thumbnail"), TaskRecord(name="thumb")], "thumb")
    assert [h.record.name for h in hits] == ["thumb", "make_thumbnail"]
    assert hits[0].score > hits[1].score > 0
    assert rank([TaskRecord(name="make_thumbnail")], "th") == []  # 2 letters: no prefix match


@pytest.mark.unit
def test_matched_words_are_shown_as_written_in_the_query() -> None:
    (hit,) = rank([TaskRecord(name="simple_add", description="adds numbers")], "Adding NUMBERS")
    assert hit.matched == ("numbers",)


@pytest.mark.unit
@pytest.mark.parametrize("query", ["", "   ", "!!!", "the of a", "x" * 501])
def test_a_query_without_usable_words_is_refused(query: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        rank(records(), query)
    assert caught.value.field == "query" and caught.value.rule


# -- the tools, in memory -------------------------------------------------------------------------------------------


@pytest.fixture
def services(tmp_path: Path) -> Services:
    s = Services(make_settings(tmp_path))
    s.__dict__["registry"] = TaskRegistry(s.settings, client=fakeredis.FakeRedis(decode_responses=True))
    return s


def calls(services: Services, *requests: tuple[str, dict[str, Any]]) -> list[Any]:
    async def run():
        async with Client(build_server(services=services)) as client:
            return [await client.call_tool(name, args) for name, args in requests]

    return asyncio.run(run())


COMPACT_KEYS = {"name", "description", "parameters", "return_type", "queue", "category"}


@pytest.mark.unit
def test_the_listing_tools_take_query_and_detail_and_keep_their_parameters(services: Services) -> None:
    async def listed():
        async with Client(build_server(services=services)) as client:
            return {t.name: t.input_schema["properties"] for t in (await client.list_tools()).tools}

    tools = asyncio.run(listed())
    available = tools["get_available_tasks"]
    assert list(available) == ["query", "category", "detail", "offset", "limit"]
    assert available["detail"]["default"] == "compact" and available["detail"]["enum"] == ["compact", "full"]
    assert available["query"]["anyOf"][0]["maxLength"] == 500
    assert (available["offset"]["default"], available["limit"]["default"]) == (0, 100)
    assert list(tools["get_tasks_by_category_name"]) == ["category", "detail"]


@pytest.mark.unit
def test_the_listing_is_compact_by_default_and_full_on_request(services: Services) -> None:
    register_all(services.registry)
    compact, full = calls(services, ("get_available_tasks", {}), ("get_available_tasks", {"detail": "full"}))
    compact, full = data(compact), data(full)
    for body in (compact, full):  # the original keys stay
        assert {"tasks", "total_count", "offset", "limit", "success", "message"} <= set(body)
        assert body["total_count"] == 6 and body["success"] is True
    assert [t["name"] for t in compact["tasks"]] == sorted(TASKS) and compact["detail"] == "compact"
    assert all(set(t) == COMPACT_KEYS for t in compact["tasks"])
    assert {"created_at", "last_updated", "deployment", "retry"} <= set(full["tasks"][0]) and full["detail"] == "full"
    assert len(json.dumps(compact)) < 0.8 * len(json.dumps(full))


@pytest.mark.unit
def test_a_query_ranks_pages_and_combines_with_a_category(services: Services) -> None:
    register_all(services.registry)
    ranked, page, in_cat, none, full = calls(
        services,
        ("get_available_tasks", {"query": "list of numbers"}),
        ("get_available_tasks", {"query": "list of numbers", "offset": 1, "limit": 1}),
        ("get_available_tasks", {"query": "list of numbers", "category": "etl"}),
        ("get_available_tasks", {"query": "quantum teleportation"}),
        ("get_available_tasks", {"query": "thumbnail", "detail": "full"}),
    )
    ranked = data(ranked)
    names = [t["name"] for t in ranked["tasks"]]
    assert names[0] == "compute_statistics" and ranked["total_count"] == len(names) >= 2
    scores = [t["score"] for t in ranked["tasks"]]
    assert scores == sorted(scores, reverse=True) and all(t["matched"] for t in ranked["tasks"])
    assert ranked["query"] == "list of numbers" and "matching" in ranked["message"]
    assert [t["name"] for t in data(page)["tasks"]] == names[1:2] and data(page)["total_count"] == len(names)
    assert {t["category"] for t in data(in_cat)["tasks"]} == {"etl"}
    assert data(none)["tasks"] == [] and data(none)["total_count"] == 0 and "without query" in data(none)["message"]
    assert data(full)["tasks"][0]["name"] == "make_thumbnail" and "created_at" in data(full)["tasks"][0]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("tool", "args"),
    [("get_available_tasks", {"category": "imagse"}), ("get_tasks_by_category_name", {"category": "imagse"})],
)
def test_an_unknown_category_is_not_found_naming_those_that_exist(services: Services, tool: str, args: dict) -> None:
    register_all(services.registry)
    (result,) = calls(services, (tool, args))
    body = data(result)
    assert result.is_error and body["error"] == "not_found" and body["category"] == "imagse"
    assert body["categories"] == ["arithmetic", "etl", "images", "text"] and body["suggestions"] == ["images"]
    assert "arithmetic, etl, images, text" in body["message"]


@pytest.mark.unit
def test_the_categories_named_are_bounded(services: Services) -> None:
    for i in range(MAX_NAMED_CATEGORIES + 5):
        services.registry.register(name=f"t{i}", category=f"c{i:03d}")
    (result,) = calls(services, ("get_tasks_by_category_name", {"category": "nope"}))
    body = data(result)
    assert len(body["categories"]) == MAX_NAMED_CATEGORIES and "and 5 more" in body["message"]


@pytest.mark.unit
def test_no_category_at_all_says_nothing_is_registered(services: Services) -> None:
    (result,) = calls(services, ("get_available_tasks", {"category": "math"}))
    assert data(result)["error"] == "not_found" and "no task is registered yet" in data(result)["message"]


@pytest.mark.unit
def test_tasks_of_a_category_are_compact_unless_full(services: Services) -> None:
    register_all(services.registry)
    compact, full = calls(
        services,
        ("get_tasks_by_category_name", {"category": "etl"}),
        ("get_tasks_by_category_name", {"category": "etl", "detail": "full"}),
    )
    assert [t["name"] for t in data(compact)["tasks"]] == ["etl_extract", "etl_transform"]
    assert all(set(t) == COMPACT_KEYS for t in data(compact)["tasks"]) and data(compact)["count"] == 2
    assert "created_at" in data(full)["tasks"][0] and data(full)["detail"] == "full"


# -- over a real stdio client ---------------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_fresh_session_finds_the_right_task_first(settings: Settings) -> None:
    register_all(TaskRegistry(settings))

    async def script():
        async with stdio_client(settings) as client:
            found = {q: data(await client.call_tool("get_available_tasks", {"query": q})) for q in QUERIES}
            compact = data(await client.call_tool("get_available_tasks", {}))
            full = data(await client.call_tool("get_available_tasks", {"detail": "full"}))
            unknown = await client.call_tool("get_available_tasks", {"category": "imaging"})
            by_cat = await client.call_tool("get_tasks_by_category_name", {"category": "imaging"})
            return found, compact, full, unknown, by_cat

    found, compact, full, unknown, by_cat = asyncio.run(script())
    for query, expected in QUERIES.items():
        assert found[query]["tasks"][0]["name"] == expected, (query, found[query]["tasks"])
    assert compact["total_count"] == 6 and all(set(t) == COMPACT_KEYS for t in compact["tasks"])
    assert all("created_at" in t for t in full["tasks"])
    for result in (unknown, by_cat):
        body = data(result)
        assert result.is_error and body["error"] == "not_found"
        assert body["categories"] == ["arithmetic", "etl", "images", "text"] and body["suggestions"] == ["images"]
