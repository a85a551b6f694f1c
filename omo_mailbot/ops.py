"""Operations around a running service: metrics + /healthz, and systemd notifications.

:func:`start_operations` hangs the observers into the service's state and
starts the metrics server when ``metrics.enabled``; :meth:`Operations.close`
says STOPPING=1 to systemd and stops the server.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from . import db
from .config import Config
from .errors import OmoError
from .metrics import Health, Metrics, OpsServer
from .sdnotify import Notifier, watchdog_interval

log = logging.getLogger(__name__)


@dataclass
class Operations:
    notifier: Notifier
    metrics: Metrics | None = None
    server: OpsServer | None = None
    observers: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for observer in self.observers:
            observer.stopping()
        if self.server is not None:
            self.server.close()


def start_operations(cfg: Config, service: Any, engine: Engine, env: Mapping[str, str] | None = None) -> Operations:
    """Attach metrics (when enabled) and the systemd notifier to ``service``."""
    ops = Operations(Notifier(env))
    state = service.state
    if cfg.metrics.enabled:
        ops.metrics = Metrics()
        service.outbox.mailer = ops.metrics.counting(service.outbox.mailer)
        readers = db.reader(engine)  # checks and gauges never queue behind a batch being written
        health = Health(cfg, readers, db.session_factory(readers), state=state, clock=service.pipeline.clock)
        try:
            ops.server = OpsServer(ops.metrics, health, cfg.metrics.address, cfg.metrics.port).start()
        except OSError as exc:
            where = f"{cfg.metrics.address}:{cfg.metrics.port}"
            raise OmoError(f"metrics.address / metrics.port: cannot listen on {where}: {exc.strerror or exc}") from None
        ops.observers.append(ops.metrics)
        log.info("metrics and /healthz listening", extra={"address": cfg.metrics.address, "port": ops.server.port})
    ops.observers.append(ops.notifier)
    state.observers.extend(ops.observers)
    interval = watchdog_interval(env)
    if interval is not None:
        state.max_wait_seconds = max(0.5, interval)
    return ops
