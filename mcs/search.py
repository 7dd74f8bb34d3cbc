"""Ranking registered tasks against a free-text query (get_available_tasks(query=...)), explainably.

Words: lowercase runs of letters and digits (so a task name splits on ``_``), a plural ``s`` dropped (files -> file,
boxes -> box, entries -> entry), a few English stop words left out. A query word matches a task's word when they are
equal, and at half weight when the task's word starts with it (3 letters or more: ``thumb`` finds ``thumbnail``).

Score: BM25 (k1 1.2, b 0.75) summed over the task's fields, each with a weight: its name counts 3 times, its
description and category once, its parameters' names and descriptions half. A task matching no query word is left
out; ties go by name. Everything is in memory over records already fetched: no index to keep in step with the
registry.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mcs.core.errors import InvalidInput
from mcs.core.models import TaskRecord

MAX_QUERY_CHARS = 500
K1 = 1.2
B = 0.75
PREFIX_WEIGHT = 0.5  # a query word that only begins a task's word
MIN_PREFIX_CHARS = 3
FIELD_WEIGHTS = {"name": 3.0, "description": 1.0, "category": 1.0, "parameters": 0.5}
STOP_WORDS = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "into", "is", "it", "its"}
    | {"of", "on", "or", "that", "the", "this", "to", "was", "with"}
)
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Hit:
    """One task that matched: its record, its score and the query words it matched (as written, in query order)."""

    record: TaskRecord
    score: float
    matched: tuple[str, ...]


def stem(word: str) -> str:
    """Drop a plural ending: entries -> entry, classes -> class, boxes -> box, files -> file (not status, is)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """The words of ``text`` as the ranking sees them (see the module docstring)."""
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]


def keywords(text: str) -> dict[str, str]:
    """The distinct words of ``text`` as the ranking sees them, each mapped to the word as written (in order)."""
    found: dict[str, str] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOP_WORDS:
            found.setdefault(stem(word), word)
    return found


def query_terms(query: str) -> dict[str, str]:
    """``keywords`` of a query; InvalidInput when it is too long or has no word the ranking can use."""
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput("query", query, f"at most {MAX_QUERY_CHARS} characters")
    terms = keywords(query)
    if not terms:
        raise InvalidInput(
            "query", query, "needs at least one word of letters or digits (other than stop words like 'the')"
        )
    return terms


def fields_of(record: TaskRecord) -> dict[str, list[str]]:
    """The words of each searched field of a task."""
    params = " ".join(f"{p.name} {p.description}" for p in record.parameters)
    return {
        "name": tokenize(record.name),
        "description": tokenize(record.description),
        "category": tokenize(record.category),
        "parameters": tokenize(params),
    }


def _frequency(term: str, words: Sequence[str]) -> float:
    """How often ``term`` occurs in ``words``: 1 per equal word, PREFIX_WEIGHT per word it only begins."""
    total = 0.0
    for word in words:
        if word == term:
            total += 1.0
        elif len(term) >= MIN_PREFIX_CHARS and word.startswith(term):
            total += PREFIX_WEIGHT
    return total


def rank(records: Iterable[TaskRecord], query: str) -> list[Hit]:
    """The records that match ``query``, best first (ties by name), each with its score and matched words."""
    terms = query_terms(query)
    docs = [(record, fields_of(record)) for record in records]
    if not docs:
        return []
    avg_len = {f: max(sum(len(fields[f]) for _, fields in docs) / len(docs), 1.0) for f in FIELD_WEIGHTS}
    freqs = [{t: {f: _frequency(t, fields[f]) for f in FIELD_WEIGHTS} for t in terms} for _, fields in docs]
    n = len(docs)
    idf = {}
    for term in terms:
        df = sum(1 for per_term in freqs if any(per_term[term].values()))
        idf[term] = math.log(1 + (n - df + 0.5) / (df + 0.5))
    hits: list[Hit] = []
    for (record, fields), per_term in zip(docs, freqs, strict=True):
        score = 0.0
        matched: list[str] = []
        for term in terms:
            term_score = 0.0
            for field, weight in FIELD_WEIGHTS.items():
                tf = per_term[term][field]
                if tf:
                    norm = K1 * (1 - B + B * len(fields[field]) / avg_len[field])
                    term_score += weight * tf * (K1 + 1) / (tf + norm)
            if term_score:
                matched.append(terms[term])
                score += idf[term] * term_score
        if matched:
            hits.append(Hit(record, round(score, 4), tuple(matched)))
    hits.sort(key=lambda h: (-h.score, h.record.name))
    return hits
