"""The batch state machine on a real database: every allowed transition works from its source state alone and
stamps its time, every other one is refused, and an ending records its webhook event."""
from __future__ import annotations

from itertools import product

import pytest
from sqlalchemy import select

from service.adapters.db import Database
from service.core import batch_lifecycle
from service.core.models import Batch, BatchStatus, WebhookDelivery, new_id, utcnow
from tests.conftest import TENANT

ALL = list(BatchStatus)
ALLOWED = [(source, target) for source, targets in batch_lifecycle.TRANSITIONS.items() for target in sorted(targets)]
REFUSED = [pair for pair in product(ALL, ALL) if pair not in ALLOWED]
# How the state machine itself takes a new batch to each state.
PATHS: dict[BatchStatus, list[BatchStatus]] = {
    BatchStatus.VALIDATING: [],
    BatchStatus.IN_PROGRESS: [BatchStatus.IN_PROGRESS],
    BatchStatus.FINALIZING: [BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING],
    BatchStatus.COMPLETED: [BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.COMPLETED],
    BatchStatus.FAILED: [BatchStatus.FAILED],
    BatchStatus.EXPIRED: [BatchStatus.IN_PROGRESS, BatchStatus.EXPIRED],
    BatchStatus.CANCELLING: [BatchStatus.CANCELLING],
    BatchStatus.CANCELLED: [BatchStatus.CANCELLING, BatchStatus.CANCELLED],
}


def _batch_in(db: Database, status: BatchStatus) -> str:
    """A batch (with a webhook URL of its own) driven into `status` by the state machine."""
    batch_id = new_id("batch")
    with db.session() as session:
        batch_lifecycle.create(session, id=batch_id, tenant=TENANT, endpoint="/v1/jobs", priority="bulk",
                               completion_window="24h", expires_at=utcnow(), webhook_url="http://127.0.0.1:9/hook",
                               webhook_secret="whsec_c2VjcmV0")
    source = BatchStatus.VALIDATING
    for target in PATHS[status]:
        with db.session() as session:
            assert batch_lifecycle.transition(session, batch_id, source, target)
        source = target
    return batch_id


def _events(db: Database, batch_id: str) -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(WebhookDelivery.event_type).where(WebhookDelivery.subject_id == batch_id)))


def test_a_new_batch_is_validating_and_stamped(module_db) -> None:
    batch_id = _batch_in(module_db, BatchStatus.VALIDATING)
    with module_db.session() as session:
        batch = session.get(Batch, batch_id)
        assert batch.status == "validating" and batch.created_at is not None
        assert all(getattr(batch, column) is None for column in batch_lifecycle.STAMPS.values()
                   if column != "created_at")


def test_every_state_is_reachable_and_the_endings_are_the_states_with_no_way_out() -> None:
    reachable = {BatchStatus.VALIDATING} | {target for _, target in ALLOWED}
    assert reachable == set(ALL) and set(PATHS) == set(ALL)
    assert batch_lifecycle.ENDINGS == set(ALL) - set(batch_lifecycle.TRANSITIONS)


@pytest.mark.parametrize(("source", "target"), ALLOWED, ids=lambda status: status.value)
def test_each_transition_works_from_its_source_and_from_no_other_state(module_db, source, target) -> None:
    stamp = batch_lifecycle.STAMPS[target]
    for state in ALL:
        batch_id = _batch_in(module_db, state)
        before = _events(module_db, batch_id)
        with module_db.session() as session:
            moved = batch_lifecycle.transition(session, batch_id, source, target, errors={"object": "list"})
        with module_db.session() as session:
            batch = session.get(Batch, batch_id)
        if state == source:
            assert moved and batch.status == target.value and getattr(batch, stamp) is not None, state
            assert batch.errors == {"object": "list"}  # the transition's own values go with it
            ending = [f"batch.{target.value}"] if target in batch_lifecycle.ENDINGS else []
            assert _events(module_db, batch_id) == before + ending
        else:
            assert not moved and batch.status == state.value and batch.errors is None, state
            assert _events(module_db, batch_id) == before


@pytest.mark.parametrize(("source", "target"), REFUSED, ids=lambda status: status.value)
def test_an_undeclared_transition_is_refused(module_db, source, target) -> None:
    batch_id = _batch_in(module_db, source)
    with module_db.session() as session, pytest.raises(ValueError, match=f"no batch transition {source} -> {target}"):
        batch_lifecycle.transition(session, batch_id, source, target)
    with module_db.session() as session:
        assert session.scalar(select(Batch.status).where(Batch.id == batch_id)) == source.value


def test_the_right_to_end_a_batch_is_taken_once_and_only_in_the_named_states(module_db) -> None:
    running, ended = _batch_in(module_db, BatchStatus.IN_PROGRESS), _batch_in(module_db, BatchStatus.COMPLETED)
    with module_db.session() as session:
        assert not batch_lifecycle.claim_ending(session, running, BatchStatus.CANCELLING)
        assert batch_lifecycle.claim_ending(session, running, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING)
    with module_db.session() as session:
        assert not batch_lifecycle.claim_ending(session, running, BatchStatus.IN_PROGRESS)
        assert not batch_lifecycle.claim_ending(session, ended, BatchStatus.COMPLETED)  # finalizing_at is set
        # The claim is no state change: the batch moves on by its transitions as before.
        assert session.scalar(select(Batch.status).where(Batch.id == running)) == "in_progress"
        assert batch_lifecycle.transition(session, running, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING)
