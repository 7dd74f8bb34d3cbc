"""``python -m mcs.dashboard``: serve the dashboard with uvicorn (the ASGI server the MCP SDK brings) until stopped.

Logs go to stderr. The address is printed once the server listens, as ``dashboard: http://HOST:PORT/``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mcs.core.errors import MCSError
from mcs.core.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcs.dashboard", description=__doc__.split("\n")[0])
    parser.add_argument("--host", help="listen address (default MCS_DASHBOARD_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default MCS_DASHBOARD_PORT, 8765)")
    args = parser.parse_args(argv)
    try:
        overrides = {k: v for k, v in (("dashboard_host", args.host), ("dashboard_port", args.port)) if v is not None}
        settings = load_settings(**overrides)
    except MCSError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    logging.basicConfig(
        stream=sys.stderr, level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import uvicorn

    from mcs.dashboard.app import build_app
    from mcs.services import Services

    host, port = settings.dashboard_host, settings.dashboard_port
    if host not in ("127.0.0.1", "localhost", "::1") and settings.dashboard_token is None:
        logging.getLogger(__name__).warning("the dashboard listens on %s, beyond loopback, read-only", host)
    app = build_app(Services(settings))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    print(f"dashboard: http://{host}:{port}/ (metrics at /metrics)", file=sys.stderr, flush=True)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
