"""The `vlq` client commands against a live server and worker."""
import csv
import json

from click.testing import CliRunner
from sqlalchemy import func, select

from service.adapters.db import Database
from service.cli import cli
from service.core.models import Job
from tests.conftest import TINY, make_image


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
    assert "resumed" in second.output
    assert _job_count(settings) == jobs_before  # nothing was submitted twice


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
