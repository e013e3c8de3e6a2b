"""What the core asks of the broker, so it can send work without importing Celery (service.adapters.broker)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Sender(Protocol):
    def enqueue(self, jobs: Sequence[Any]) -> bool:
        """Send each queued job's task after its row committed; False if the broker did not take them all."""

    def enqueue_ingest(self, batch_id: str) -> bool:
        """Send a validating batch's ingest task after its row committed; False if the broker is down."""

    def publish_cancel(self, job_id: str) -> None:
        """Tell every worker to stop `job_id` if it runs there."""
