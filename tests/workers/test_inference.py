"""`execute_job` called directly, on a real worker runtime with the tiny model: how each kind of job ends."""
from __future__ import annotations

import dataclasses
import io
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from bench.documents import make_invoice
from service.core import grounding, lifecycle
from service.core.models import new_id
from tests.conftest import make_image, queued_job, read_job
from workers.inference import execute_job, read_pages
from workers.runtime import WorkerRuntime

MODEL = "tiny-unit"  # served by this module's runtime alone, and never sent to a queue: no other worker takes it


@pytest.fixture(scope="module")
def runtime(settings, exported_models) -> Iterator[WorkerRuntime]:
    runtime = WorkerRuntime(dataclasses.replace(settings, models=(MODEL,)), name=f"unit@{new_id('w')}")
    runtime.start()
    assert runtime.models[MODEL]["status"] == "live", runtime.models
    yield runtime
    runtime.stop()


def _job(runtime: WorkerRuntime, **fields: Any) -> str:
    return queued_job(runtime, fields.pop("model", MODEL), **fields)


def test_a_job_runs_and_records_its_answer_usage_and_timings(runtime) -> None:
    job_id = _job(runtime)
    assert execute_job(runtime, job_id) == "succeeded"
    job, events = read_job(runtime, job_id)
    assert events == ["job.queued", "job.running", "job.succeeded"]
    assert job.result_text and job.completion_tokens == 8 and job.prompt_tokens > 0
    assert job.worker == runtime.name and job.attempts == 1 and job.inference_ms > 0
    assert not runtime.running_count()


def test_a_job_whose_image_is_gone_fails_as_unreadable(runtime) -> None:
    job_id = _job(runtime, image_sha256="f" * 64)
    assert execute_job(runtime, job_id) == "failed"
    job, events = read_job(runtime, job_id)
    assert (job.error_code, events[-1]) == ("image_unreadable", "job.failed")


def test_a_job_for_a_model_this_worker_does_not_serve_fails_as_unavailable(runtime) -> None:
    job_id = _job(runtime, model="tiny-idle")
    assert execute_job(runtime, job_id) == "failed"
    assert read_job(runtime, job_id)[0].error_code == "model_unavailable"


def test_a_job_that_already_ended_is_left_alone(runtime) -> None:
    job_id = _job(runtime)
    with runtime.db.session() as session:
        assert lifecycle.cancel_queued(session, job_id)
    assert execute_job(runtime, job_id) is None  # a redelivered message for a cancelled job
    job, events = read_job(runtime, job_id)
    assert job.status == "cancelled" and events == ["job.queued", "job.cancelled"]


def test_a_constrained_job_ends_with_parsed_json_or_as_cut_off(runtime) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    job_id = _job(runtime, response_schema=schema, max_tokens=64, ignore_eos=False)
    assert execute_job(runtime, job_id) == "succeeded"
    job, _ = read_job(runtime, job_id)
    # Random weights under a grammar: a complete object parses; one cut off by max_tokens is the caller's limit.
    if job.finish_reason == "stop":
        assert isinstance(job.result_json, dict) and isinstance(job.result_json["a"], int)
    else:
        assert (job.finish_reason, job.result_json, job.error_code) == ("length", None, None)


def test_a_constrained_job_cut_off_by_max_tokens_succeeds_with_its_partial_text(runtime) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    job_id = _job(runtime, response_schema=schema, max_tokens=2, ignore_eos=False)
    assert execute_job(runtime, job_id) == "succeeded"
    job, events = read_job(runtime, job_id)
    assert (job.finish_reason, job.result_json, job.error_code, events[-1]) == ("length", None, None, "job.succeeded")
    assert job.result_text.startswith("{") and job.completion_tokens == 2


def test_sampling_draws_a_fresh_seed_per_job_and_a_given_seed_reproduces_the_text(runtime) -> None:
    # The tiny model's random weights make its next-token distribution near uniform: two draws of 12 tokens
    # agree only if their generators were seeded alike.
    sampled = {"temperature": 1.0, "max_tokens": 12}
    free = [_job(runtime, **sampled) for _ in range(2)]
    seeded = [_job(runtime, seed=1234, **sampled) for _ in range(2)]
    greedy = _job(runtime, max_tokens=12)
    for job_id in [*free, *seeded, greedy]:
        assert execute_job(runtime, job_id) == "succeeded"
    free_jobs, seeded_jobs = [read_job(runtime, j)[0] for j in free], [read_job(runtime, j)[0] for j in seeded]
    assert free_jobs[0].result_text != free_jobs[1].result_text
    assert free_jobs[0].seed != free_jobs[1].seed and all(job.seed is not None for job in free_jobs)
    assert seeded_jobs[0].result_text == seeded_jobs[1].result_text and seeded_jobs[0].seed == 1234
    assert read_job(runtime, greedy)[0].seed is None  # greedy needs none

    replay = _job(runtime, seed=free_jobs[0].seed, **sampled)  # the seed a job shows reproduces its answer
    assert execute_job(runtime, replay) == "succeeded"
    assert read_job(runtime, replay)[0].result_text == free_jobs[0].result_text


def test_a_job_that_fails_inside_the_engine_leaves_another_tenants_running_jobs_succeeding(runtime) -> None:
    # Submit refuses this schema now (the API compiles it with xgrammar); a row that holds one stands for any
    # failure the submit checks miss: the engine builds its grammar inside the step every running job shares.
    poisoned = {"type": "object", "properties": {"a": {"$ref": "#/definitions/nope"}}, "required": ["a"]}
    others = [_job(runtime, tenant="other-tenant", max_tokens=24) for _ in range(3)]
    culprit = _job(runtime, response_schema=poisoned, max_tokens=24)
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = dict(zip([*others, culprit], pool.map(lambda job_id: execute_job(runtime, job_id),
                                                         [*others, culprit]), strict=True))
    assert [statuses[job_id] for job_id in others] == ["succeeded"] * 3
    assert all(read_job(runtime, job_id)[0].completion_tokens == 24 for job_id in others)
    job, _ = read_job(runtime, culprit)
    assert (statuses[culprit], job.error_code, job.error_message) == (
        "failed", "inference_error", "The engine failed this request.")


@pytest.mark.parametrize("size", [(3000, 40), (8000, 20), (30, 9000)])
def test_a_thin_strip_job_succeeds(runtime, size) -> None:
    job_id = _job(runtime, image_sha256=runtime.blobs.put(make_image(size=size)))
    assert execute_job(runtime, job_id) == "succeeded", read_job(runtime, job_id)[0].error_message


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_extraction_job_stores_grounded_fields_and_its_review_flag(runtime) -> None:
    doc = make_invoice(random.Random(2), n_pages=1, items_per_page=2)
    schema = runtime.settings.presets["invoice"].output_schema()
    job_id = _job(runtime, image_sha256=runtime.blobs.put(_png(doc.pages[0])), preset="invoice",
                  response_schema=schema, max_tokens=runtime.settings.presets["invoice"].max_tokens, ignore_eos=False)
    assert execute_job(runtime, job_id) == "succeeded"
    job, _ = read_job(runtime, job_id)
    fields = job.grounding["fields"]
    # One field per scalar of the (random) output, each scored; the tiny model's values are noise, so some of its
    # required values are not on the page, or its tokens were unsure: the job is flagged.
    assert [leaf.path for leaf in grounding.leaves(job.result_json, schema)] == list(fields)
    assert all(f["confidence"] is None or 0 <= f["confidence"] <= 1 for f in fields.values())
    assert job.grounding["review"] is True and job.grounding["review_reasons"]
    plain_id = _job(runtime, response_schema=schema, max_tokens=runtime.settings.presets["invoice"].max_tokens,
                    ignore_eos=False)  # a schema, no preset
    assert execute_job(runtime, plain_id) == "succeeded" and read_job(runtime, plain_id)[0].grounding is None


def test_a_two_page_invoice_is_read_page_by_page_and_each_field_found_on_its_page(runtime) -> None:
    doc = make_invoice(random.Random(4), n_pages=2, items_per_page=3)
    pages = read_pages(runtime, [(number, _png(page)) for number, page in enumerate(doc.pages, 1)])
    assert [page.number for page in pages] == [1, 2]
    found = grounding.ground(doc.values, runtime.settings.presets["invoice"].output_schema(), pages)
    assert found["review"] is False
    for path, placed in doc.placed.items():
        field = found["fields"][path]
        assert field["page"] == placed.page and grounding.iou(tuple(field["bbox"]), placed.box) >= 0.5, (path, field)
    assert found["fields"]["vendor"]["page"] == 1 and found["fields"]["total"]["page"] == 2
    assert found["fields"]["line_items[5].amount"]["page"] == 2
