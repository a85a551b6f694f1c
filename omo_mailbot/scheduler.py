"""The clock that starts the daily digest (the only importer of apscheduler).

APScheduler 3.x BackgroundScheduler with an in-memory job store: nothing to
persist or share, because the guarantee lives in the database (the unique
``digest_runs`` row), not in the scheduler. One job runs every day at
``digest.time`` in ``digest.timezone`` and lets the work calendar decide
whether it is a working day (so extra working days and holidays both work);
one job runs once at start-up to catch up a digest missed during downtime;
and a retry runs every hour after the digest time until 18:00, so a digest
that failed (a database outage at 08:00) still goes out that day; the unique
row makes every run after a successful one a no-op. A generous misfire grace
time covers a busy or suspended process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from .config import DigestConfig

log = logging.getLogger(__name__)
MISFIRE_GRACE_SECONDS = 6 * 3600
LAST_RETRY_HOUR = 18  # a digest that could not go out by then waits for the next working day


class DigestScheduler:
    def __init__(self, job: Callable[[], Any], cfg: DigestConfig) -> None:
        self.job = job
        self.tz = cfg.zone
        at = cfg.at
        self.trigger = CronTrigger(hour=at.hour, minute=at.minute, timezone=self.tz)
        first_retry = at.hour + 1
        self.retry = (
            CronTrigger(hour=f"{first_retry}-{max(first_retry, LAST_RETRY_HOUR)}", minute=at.minute, timezone=self.tz)
            if first_retry < 24
            else None
        )
        self.scheduler: BackgroundScheduler | None = None

    def _run(self) -> None:
        try:
            self.job()
        except Exception:  # a failed run must not stop the scheduler; the hourly retry catches up
            log.exception("digest run failed")

    def start(self, *, catch_up: bool = True) -> None:
        scheduler = BackgroundScheduler(jobstores={"default": MemoryJobStore()}, timezone=self.tz)
        scheduler.add_job(
            self._run,
            self.trigger,
            id="digest",
            misfire_grace_time=MISFIRE_GRACE_SECONDS,
            coalesce=True,
            max_instances=1,
        )
        if self.retry is not None:
            scheduler.add_job(self._run, self.retry, id="digest-retry", coalesce=True, max_instances=1)
        if catch_up:
            scheduler.add_job(self._run, id="digest-catch-up", max_instances=1)  # no trigger: run now, once
        scheduler.start()
        self.scheduler = scheduler

    def next_run(self) -> Any:
        if self.scheduler is None:
            return None
        job = self.scheduler.get_job("digest")
        return None if job is None else job.next_run_time

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
            self.scheduler = None
