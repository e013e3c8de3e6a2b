"""Who is asking: the caller a request acts as (its tenant, whether it is an admin, its limits), and the job quota.

Flask-free, so domain code (service/jobs.py) can take a Caller; service/auth.py resolves it once per request.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core.errors import ApiError, ErrorCode
from service.core.models import Job, JobStatus

DEFAULT_TENANT = "default"  # owns the rows from before tenants existed, and every request while auth is off
TENANT_REGEX = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
TENANT_PATTERN = re.compile(f"^{TENANT_REGEX}$")
QUOTA_RETRY_AFTER_S = 5  # a hint only: when a slot frees depends on the tenant's own jobs


@dataclass(frozen=True)
class Caller:
    """The tenant a request acts for, and the limits of the key it came with (0 is unlimited)."""

    tenant: str
    key_id: str | None = None  # None while auth is off
    admin: bool = False
    rate_limit_rps: float = 0.0
    max_queued_jobs: int = 0

    def admit_jobs(self, session: Session, count: int) -> None:
        """Refuse with 429 `quota_exceeded` if `count` more jobs would take the tenant past this key's quota."""
        limit = self.max_queued_jobs
        if not limit or count <= 0:
            return
        pending = pending_jobs(session, self.tenant, cap=limit)
        if pending + count > limit:
            raise ApiError(
                ErrorCode.QUOTA_EXCEEDED,
                f"This key allows {limit} queued or running jobs; the tenant has {pending} and this request adds "
                f"{count}. Retry when some have finished.",
                {"limit": limit, "pending": pending, "requested": count},
                headers={"Retry-After": str(QUOTA_RETRY_AFTER_S)},
            )


def pending_jobs(session: Session, tenant: str, *, cap: int) -> int:
    """The tenant's queued and running jobs, counted up to `cap` (so a huge backlog costs no more than the limit)."""
    pending = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
    rows = select(Job.id).where(Job.tenant == tenant, Job.status.in_(pending)).limit(cap).subquery()
    return session.scalar(select(func.count()).select_from(rows)) or 0
