"""The `vlq` client commands against a live server and worker."""
import csv
import io
import json
import zipfile

from click.testing import CliRunner
from sqlalchemy import func, select
from werkzeug.test import create_environ
from werkzeug.wrappers import Request

from service.adapters.db import Database
from service.cli import cli
from service.client_cli import write_archive_form
from service.core.models import Job
from tests.conftest import TINY, make_image
from tests.inputs import make_pdf, make_tiff


def _job_count(settings):
    with Database(settings.database_url).session() as session:
        return session.scalar(select(func.count()).select_from(Job))


def test_submit_a_folder_waits_writes_results_and_resumes_without_resubmitting(tmp_path, live_server, worker, settings,
                                                                                api_key):
    folder = tmp_path / "receipts"
    (folder / "2024").mkdir(parents=True)
    for index in range(3):
        (folder / f"r{index}.png").write_bytes(make_image(color=(index * 50, 0, 0)))
    (folder / "2024" / "scan.jpg").write_bytes(make_image("JPEG"))
    (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "results.csv"
    args = ["submit", str(folder), "--prompt", "Total?", "--model", TINY, "--max-tokens", "4",
            "--out", str(out), "--url", live_server, "--api-key", api_key]

    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    batch_id = first.stdout.strip().splitlines()[-1]
    rows = list(csv.DictReader(out.open()))
    assert sorted(row["custom_id"] for row in rows) == ["2024/scan.jpg", "r0.png", "r1.png", "r2.png"]
    assert all(row["status"] == "succeeded" for row in rows)

    jobs_before = _job_count(settings)
    second = CliRunner().invoke(cli, args)  # the same command again
    assert second.exit_code == 0, second.output
    assert second.stdout.strip().splitlines()[-1] == batch_id
    assert "resumed" in second.output and "nothing uploaded" in second.output
    assert "uploading" not in second.output  # the batch was looked up by its key before any upload
    assert _job_count(settings) == jobs_before  # nothing was submitted twice


def test_submit_takes_pdfs_and_tiffs_read_page_by_page(tmp_path, live_server, worker, api_key, client):
    folder = tmp_path / "invoices"
    folder.mkdir()
    (folder / "a.pdf").write_bytes(make_pdf(["ONE", "TWO", "THREE"]))
    (folder / "b.tiff").write_bytes(make_tiff(["FRAME"]))
    (folder / "c.png").write_bytes(make_image())
    out = tmp_path / "results.jsonl"
    result = CliRunner().invoke(cli, ["submit", str(folder), "--prompt", "Total?", "--model", TINY, "--max-tokens",
                                      "2", "--pages", "1", "--page-mode", "per_page", "--out", str(out),
                                      "--url", live_server, "--api-key", api_key])
    assert result.exit_code == 0, result.output
    items = {item["custom_id"]: item for item in map(json.loads, out.read_text().splitlines())}
    assert sorted(items) == ["a.pdf", "b.tiff", "c.png"] and {item["status"] for item in items.values()} == {
        "succeeded"}
    job = client.get(f"/v1/jobs/{items['a.pdf']['job_id']}").get_json()
    assert job["image"]["format"] == "PDF" and job["page_mode"] == "per_page"
    assert [(page["page"], page["status"]) for page in job["pages"]] == [(1, "succeeded")]


def test_ctrl_c_while_following_says_the_batch_goes_on_and_how_to_resume(tmp_path, live_server, api_key, monkeypatch):
    (tmp_path / "a.png").write_bytes(make_image(color=(3, 1, 4)))
    runner = CliRunner(env={"VLQ_URL": live_server, "VLQ_API_KEY": api_key})
    args = ["submit", str(tmp_path / "a.png"), "--prompt", "x", "--model", "tiny-idle", "--wait"]  # stays queued

    def interrupt(_seconds):
        raise KeyboardInterrupt
    monkeypatch.setattr("service.client_cli.time.sleep", interrupt)
    result = runner.invoke(cli, args)
    batch_id = result.stdout.strip().splitlines()[-1]
    assert result.exit_code == 130, result.output
    assert f"batch {batch_id} goes on at the server" in result.output
    assert "run the same command" in result.output and f"vlq cancel {batch_id}" in result.output
    status = json.loads(runner.invoke(cli, ["status", batch_id]).stdout)
    assert status["status"] in ("validating", "in_progress")  # still there, untouched
    assert runner.invoke(cli, ["cancel", batch_id]).exit_code == 0


def test_status_results_and_cancel_commands(tmp_path, live_server, worker, api_key):
    (tmp_path / "a.png").write_bytes(make_image())
    # The key from the environment, as a user would set it once.
    runner = CliRunner(env={"VLQ_URL": live_server, "VLQ_API_KEY": api_key})
    submitted = runner.invoke(cli, ["submit", str(tmp_path / "a.png"), "--prompt", "x", "--model", TINY,
                                    "--max-tokens", "2", "--wait"])
    batch_id = submitted.stdout.strip().splitlines()[-1]
    status = json.loads(runner.invoke(cli, ["status", batch_id]).stdout)
    assert status["status"] == "completed" and status["request_counts"]["completed"] == 1
    out = tmp_path / "r.jsonl"
    assert runner.invoke(cli, ["results", batch_id, "--out", str(out)]).exit_code == 0
    assert json.loads(out.read_text().splitlines()[0])["custom_id"] == "a.png"
    cancelled = runner.invoke(cli, ["cancel", batch_id])
    assert cancelled.exit_code != 0 and "batch_not_cancellable" in cancelled.output


def test_the_cli_without_a_key_says_how_to_pass_one(tmp_path, live_server):
    result = CliRunner(env={"VLQ_API_KEY": None}).invoke(cli, ["status", "batch_x", "--url", live_server])
    assert result.exit_code != 0 and "unauthorized" in result.output and "VLQ_API_KEY" in result.output


def test_the_cli_explains_an_unreachable_server(tmp_path):
    (tmp_path / "a.png").write_bytes(make_image())
    result = CliRunner().invoke(cli, ["submit", str(tmp_path), "--prompt", "x", "--url", "http://127.0.0.1:1"])
    assert result.exit_code != 0 and "cannot reach VLQ" in result.output


def test_submit_a_folder_of_1200_images_sends_one_batch(tmp_path, live_server, api_key):
    """Over Flask's 1,000-part form limit as one part per image; the CLI sends one zip part instead."""
    folder = tmp_path / "many"
    (folder / "sub").mkdir(parents=True)
    tiny = make_image(size=(8, 8))
    for index in range(1200):
        (folder / ("sub" if index % 2 else "") / f"i{index:04}.png").write_bytes(tiny)
    runner = CliRunner(env={"VLQ_URL": live_server, "VLQ_API_KEY": api_key})
    # tiny-idle: no worker serves it, so the 1,200 items wait queued and are cancelled below.
    result = runner.invoke(cli, ["submit", str(folder), "--prompt", "x", "--model", "tiny-idle", "--max-tokens", "1"])
    assert result.exit_code == 0, result.output
    assert "warning: No live worker serves the model 'tiny-idle'" in result.stderr  # said before any waiting
    batch_id = result.stdout.strip().splitlines()[-1]
    status = json.loads(runner.invoke(cli, ["status", batch_id]).stdout)
    assert status["request_counts"]["total"] == 1200 and status["status"] in ("in_progress", "validating")
    cancelled = runner.invoke(cli, ["cancel", batch_id])
    assert cancelled.exit_code == 0, cancelled.output


def test_the_archive_form_is_a_valid_multipart_body_with_every_image(tmp_path):
    images = {}
    for name in ("a.png", "sub/b.jpg"):
        path = tmp_path / name.replace("/", "_")
        path.write_bytes(make_image())
        images[name] = path
    body = io.BytesIO()
    content_type = write_archive_form(body, {"prompt": "Total?"}, images)
    parsed = Request(create_environ(method="POST", input_stream=io.BytesIO(body.getvalue()),
                                    content_type=content_type, content_length=len(body.getvalue())))
    assert parsed.form["prompt"] == "Total?"
    with zipfile.ZipFile(parsed.files["archive"].stream) as archive:
        assert archive.namelist() == ["a.png", "sub/b.jpg"]
        assert archive.read("sub/b.jpg") == images["sub/b.jpg"].read_bytes()
