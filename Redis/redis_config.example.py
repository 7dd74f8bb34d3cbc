"""Example Redis configuration. Copy it to ``Redis/redis_config.py`` (git-ignored) and edit the copy.

Precedence (highest first): explicit values > environment variables > ``.env`` > this file > defaults.
Environment variables (REDIS_HOST, REDIS_PORT, REDIS_PASSWORD, REDIS_BROKER_DB, REDIS_BACKEND_DB) are the
recommended way; this file exists for users who prefer the seed's Python config.
"""


def get_redis_config():
    return {
        "host": "localhost",
        "port": 6379,
        "password": None,  # put your password in the copy, never in this example
        "db": 0,  # the DB that holds MCS's task metadata
        "broker_db": 0,
        "backend_db": 1,
        "decode_responses": True,
        "socket_timeout": 30,
        "socket_connect_timeout": 30,
        "retry_on_timeout": True,
    }
