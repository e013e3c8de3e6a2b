"""Log lines of a request about a job, batch or delivery (its id in the path) carry that id."""
from __future__ import annotations

from flask import Flask, g, request

from service.core.logs import bind, unbind


def init_app(app: Flask) -> None:
    """A request about a job or batch (its id in the path) logs with that id."""
    @app.before_request
    def _bind_request_ids() -> None:
        args = request.view_args or {}
        g.vlq_log_token = bind(job_id=args.get("job_id"), batch_id=args.get("batch_id"),
                               delivery_id=args.get("delivery_id"))

    @app.teardown_request
    def _unbind_request_ids(_exc: BaseException | None) -> None:
        token = g.pop("vlq_log_token", None)
        if token is not None:
            unbind(token)
