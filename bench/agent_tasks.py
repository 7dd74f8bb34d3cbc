"""The tasks bench/bench_agent.py's worker serves: the seed's four-stage ETL, a sleep, and a scale task.

Served as a deployed task's worker is (every key under ``MCS_KEY_PREFIX``, consuming ``MCS_BENCH_QUEUE``); the bench
registers them with the metadata an agent sees. ``scale`` and ``scale_any`` are the same code: the bench registers
``value`` as ``float`` for one and as ``Any`` for the other (the old path, where a string reached the worker).
"""

import os
import time

from mcs.core.celery_app import create_celery_app
from mcs.core.settings import load_settings

celery_app = create_celery_app(load_settings(), key_prefix=os.environ.get("MCS_KEY_PREFIX", ""))
QUEUE = os.environ.get("MCS_BENCH_QUEUE", "bench_etl")

CITIES = (" Paris", "lyon ", "Marseille", " nice ", "LILLE")


@celery_app.task(name="mcp_app.etl_extract", queue=QUEUE)
def etl_extract(n: int = 20) -> list:
    """n raw customer records, as a CSV export gives them: every 4th has an amount that does not parse."""
    return [
        {
            "id": i,
            "name": f"customer {i:03d}",
            "email": f"Customer.{i:03d}@Example.COM",
            "city": CITIES[i % len(CITIES)],
            "amount": "n/a" if i % 4 == 3 else f"{(i * 37) % 500 + 9.5:.2f}",
        }
        for i in range(n)
    ]


@celery_app.task(name="mcp_app.etl_clean", queue=QUEUE)
def etl_clean(records: list) -> list:
    """Drop the records whose amount does not parse; trim and normalise the rest."""
    cleaned = []
    for record in records:
        try:
            amount = float(record["amount"])
        except (TypeError, ValueError):
            continue
        cleaned.append(
            {
                "id": record["id"],
                "name": record["name"].strip().title(),
                "email": record["email"].strip().lower(),
                "city": record["city"].strip().title(),
                "amount": amount,
            }
        )
    return cleaned


@celery_app.task(name="mcp_app.etl_transform", queue=QUEUE)
def etl_transform(records: list) -> list:
    """Add the amount in cents and a tier to every record."""
    return [
        {**r, "amount_cents": round(r["amount"] * 100), "tier": "gold" if r["amount"] >= 300 else "standard"}
        for r in records
    ]


@celery_app.task(name="mcp_app.etl_stats", queue=QUEUE)
def etl_stats(records: list) -> dict:
    """Count, total, mean, min and max of the amounts, and the total per city."""
    amounts = [r["amount"] for r in records]
    by_city: dict[str, float] = {}
    for r in records:
        by_city[r["city"]] = round(by_city.get(r["city"], 0.0) + r["amount"], 2)
    return {
        "count": len(amounts),
        "total": round(sum(amounts), 2),
        "mean": round(sum(amounts) / len(amounts), 2) if amounts else None,
        "min": min(amounts, default=None),
        "max": max(amounts, default=None),
        "gold": sum(r["tier"] == "gold" for r in records),
        "by_city": by_city,
    }


@celery_app.task(name="mcp_app.bench_sleep", queue=QUEUE)
def bench_sleep(seconds: float = 1.0) -> dict:
    time.sleep(seconds)
    return {"slept": seconds}


def _scale(value, factor=2.0):
    return value * factor  # "2" * 2.0: TypeError (can't multiply sequence by non-int of type 'float')


@celery_app.task(name="mcp_app.scale", queue=QUEUE)
def scale(value: float, factor: float = 2.0) -> float:
    return _scale(value, factor)


@celery_app.task(name="mcp_app.scale_any", queue=QUEUE)
def scale_any(value, factor: float = 2.0):
    return _scale(value, factor)
