"""Entry points for gunicorn: the app factory (from the environment) and its logger.

`provisiond serve` starts gunicorn as a child process (by PID) with
`-c python:provisiond.http.wsgi 'provisiond.http.wsgi:app_from_env()'`; the environment says
which config file, inventory, state dir and base URL to use, so the worker builds the same
application the parent would. Module-level names below are gunicorn settings.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Flask
from gunicorn.glogging import Logger

from provisiond.config import load_config
from provisiond.logs import KeyValueFormatter, setup_logging

ENV_CONFIG = "PROVISIOND_CONFIG"
ENV_INVENTORY = "PROVISIOND_INVENTORY"
ENV_STATE_DIR = "PROVISIOND_STATE_DIR"
ENV_BASE_URL = "PROVISIOND_BASE_URL"
ENV_VERBOSITY = "PROVISIOND_VERBOSITY"
ENV_INSTANCE = "PROVISIOND_INSTANCE"  # echoed by /api/v1/health: "this is my child"

# gunicorn settings (read by `-c python:provisiond.http.wsgi`; unknown names are ignored)
worker_class = "gthread"
workers = 1
graceful_timeout = 5
timeout = 300
accesslog = None  # one structured line per request comes from the app itself
errorlog = "-"
control_socket_disable = True
logger_class = "provisiond.http.wsgi.KeyValueLogger"


class KeyValueLogger(Logger):
    """gunicorn's own messages in the same key=value format, secrets masked."""

    def setup(self, cfg) -> None:  # type: ignore[no-untyped-def]
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(KeyValueFormatter())


def app_from_env() -> Flask:
    from provisiond.http import create_app

    setup_logging(int(os.environ.get(ENV_VERBOSITY, "1")))
    logging.getLogger("provisiond").debug("building the HTTP app in worker %d", os.getpid())
    config_path = os.environ.get(ENV_CONFIG)
    config = load_config(Path(config_path) if config_path else None)
    config = config.with_overrides(
        inventory=Path(os.environ[ENV_INVENTORY]) if os.environ.get(ENV_INVENTORY) else None,
        state_dir=Path(os.environ[ENV_STATE_DIR]) if os.environ.get(ENV_STATE_DIR) else None,
    )
    return create_app(config, base_url=os.environ.get(ENV_BASE_URL) or None,
                      instance=os.environ.get(ENV_INSTANCE, ""))
