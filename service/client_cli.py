"""`vlq submit | status | results | cancel`: the client side, talking to a VLQ server over HTTP only."""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import click
import requests
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Which files of a folder are sent; what each one is, the server tells from its bytes.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".pdf", ".tif", ".tiff", ".heic", ".heif"}
TERMINAL = {"completed", "failed", "expired", "cancelled"}
console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def server_options(command: F) -> F:
    """--url and --api-key (or VLQ_URL and VLQ_API_KEY), which every client command takes."""
    command = click.option("--api-key", envvar="VLQ_API_KEY",
                           help="An API key (or set VLQ_API_KEY); not needed if the server has auth disabled.")(command)
    return click.option("--url", envvar="VLQ_URL", default="http://127.0.0.1:8080", show_default=True,
                        help="The VLQ server (or set VLQ_URL).")(command)


class Server:
    """A thin HTTP client that sends the API key and turns VLQ's error bodies into readable messages."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.http = requests.Session()
        if api_key:
            self.http.headers["Authorization"] = f"Bearer {api_key}"

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.http.request(method, self.url + path, timeout=kwargs.pop("timeout", 600), **kwargs)
        except requests.ConnectionError:
            raise click.ClickException(f"cannot reach VLQ at {self.url}; is it running (`make run`)?") from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message = f"{error['code']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            if response.status_code == 401:
                message += " (pass --api-key or set VLQ_API_KEY)"
            raise click.ClickException(f"{method} {path} -> {response.status_code} {message}")
        return response


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--prompt", required=True, help="The question asked of every image.")
@click.option("--model", help="A registry model (the server's default otherwise).")
@click.option("--max-tokens", type=int)
@click.option("--temperature", type=float)
@click.option("--priority", type=click.Choice(["bulk", "interactive"]), default="bulk", show_default=True)
@click.option("--pages", help='Documents: the pages to read, e.g. "1-3,7" (all by default).')
@click.option("--page-mode", type=click.Choice(["document", "per_page"]),
              help="Documents: all pages in one request (the default), or each page on its own.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write results here when done (.csv or .jsonl); implies --wait.")
@click.option("--wait/--no-wait", default=False, help="Follow progress until the batch ends.")
@server_options
def submit(paths: tuple[str, ...], prompt: str, model: str | None, max_tokens: int | None,
           temperature: float | None, priority: str, pages: str | None, page_mode: str | None, out: Path | None,
           wait: bool, url: str, api_key: str | None) -> None:
    """Submit a folder, files or globs of images and documents (PDF, TIFF, HEIC) as one batch. Re-running the
    same command resumes it."""
    images = collect_images(paths)
    if not images:
        raise click.ClickException("no .jpg, .jpeg, .png, .webp, .pdf, .tif, .tiff, .heic or .heif files found")
    fields = {key: str(value) for key, value in {"prompt": prompt, "model": model, "max_tokens": max_tokens,
                                                  "temperature": temperature, "priority": priority, "pages": pages,
                                                  "page_mode": page_mode}.items()
              if value is not None}
    digests = {name: _sha256(path) for name, path in images.items()}
    # The same images and options give the same key, so a re-run finds its batch instead of resubmitting.
    key = "vlq-submit-" + hashlib.sha256(json.dumps([fields, sorted(digests.items())]).encode()).hexdigest()
    server = Server(url, api_key)
    # A re-run finds its batch by the key before uploading anything.
    found = server.call("GET", "/v1/batches", params={"idempotency_key": key, "limit": 1}).json()["data"]
    resumed = bool(found)
    batch = found[0] if found else upload(server, key, fields, images)
    total = batch["request_counts"]["total"]
    console.print(f"{'resumed' if resumed else 'created'} batch {batch['id']} ({total} items"
                  f"{', nothing uploaded' if resumed else ''})")
    for warning in batch.get("warnings", []):  # e.g. no live worker serves the model: say so before any waiting
        console.print(f"warning: {warning['message']}", style="yellow", markup=False, soft_wrap=True)
    click.echo(batch["id"])
    if wait or out:
        try:
            batch = follow(server, batch["id"])
        except KeyboardInterrupt:
            raise _stopped_following(batch["id"]) from None
        if out:
            download(server, batch["id"], out)


def upload(server: Server, key: str, fields: Mapping[str, str], images: Mapping[str, Path]) -> dict[str, Any]:
    """Create the batch under `key`. One zip part, not one part per image (forms are capped at 1,000 parts),
    built on disk and streamed, so neither the folder's size nor its count of images is held in memory."""
    with tempfile.TemporaryFile() as body:
        content_type = write_archive_form(body, fields, images)
        size = body.tell()
        body.seek(0)
        console.print(f"uploading {len(images)} files ({size / 1e6:.1f} MB)…")
        try:
            response = server.call("POST", "/v1/batches", data=body,
                                   headers={"Idempotency-Key": key, "Content-Type": content_type})
        except KeyboardInterrupt:
            console.print("\nupload interrupted; run the same command again to submit (or find) the batch")
            raise click.exceptions.Exit(130) from None
    return response.json()


def _stopped_following(batch_id: str) -> click.exceptions.Exit:
    """What Ctrl-C while following says: the batch goes on at the server, and how to come back to it."""
    console.print(f"\nstopped following; batch {batch_id} goes on at the server.\n"
                  f"  follow it again: run the same command (nothing is uploaded twice)\n"
                  f"  check on it:     vlq status {batch_id}\n"
                  f"  results so far:  vlq results {batch_id} --out results.csv\n"
                  f"  stop it:         vlq cancel {batch_id}")
    return click.exceptions.Exit(130)


@click.command()
@click.argument("batch_id")
@server_options
def status(batch_id: str, url: str, api_key: str | None) -> None:
    """Show a batch's state and counts."""
    batch = Server(url, api_key).call("GET", f"/v1/batches/{batch_id}").json()
    click.echo(json.dumps({key: batch[key] for key in ("id", "status", "request_counts", "output_file_id",
                                                        "error_file_id", "errors")}, indent=2))


@click.command()
@click.argument("batch_id")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help=".csv or .jsonl")
@server_options
def results(batch_id: str, out: Path, url: str, api_key: str | None) -> None:
    """Download a batch's results so far, one row per item."""
    download(Server(url, api_key), batch_id, out)


@click.command()
@click.argument("batch_id")
@server_options
def cancel(batch_id: str, url: str, api_key: str | None) -> None:
    """Cancel a batch: queued items stop, running ones finish, results so far stay readable."""
    batch = Server(url, api_key).call("POST", f"/v1/batches/{batch_id}/cancel").json()
    click.echo(f"{batch['id']}: {batch['status']}")


def collect_images(paths: tuple[str, ...]) -> dict[str, Path]:
    """custom_id -> file, from folders (recursively; ids relative to the folder), files and glob patterns."""
    images: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = {f.relative_to(path).as_posix(): f for f in sorted(path.rglob("*"))
                     if f.suffix.lower() in IMAGE_SUFFIXES}
        elif path.is_file():
            found = {path.name: path}
        else:
            found = {f.name: f for f in sorted(Path().glob(raw)) if f.suffix.lower() in IMAGE_SUFFIXES}
        images.update(found)
    return images


def write_archive_form(out: IO[bytes], fields: Mapping[str, str], images: Mapping[str, Path]) -> str:
    """Write a multipart/form-data body to `out`: the fields, then every image in one stored (uncompressed: images
    are compressed already) zip part `archive`, named by its custom_id. Returns the body's Content-Type."""
    boundary = f"vlq-{uuid.uuid4().hex}"
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="archive"; filename="images.zip"\r\n'
              "Content-Type: application/zip\r\n\r\n".encode())
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for custom_id, path in images.items():
            archive.write(path, arcname=custom_id)
    out.write(f"\r\n--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}"


def follow(server: Server, batch_id: str) -> dict[str, Any]:
    """Poll the batch with a progress bar (counts, rate, ETA) until it ends.

    The rate and ETA count only what ended while this command watched: a resumed batch's earlier items did not
    take this long.
    """
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:.1f}/s"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    batch = server.call("GET", f"/v1/batches/{batch_id}").json()
    already, started = _ended(batch), time.monotonic()
    with Progress(*columns, console=console) as progress:
        # Starting at `already` (not 0), so the bar's own speed for the ETA sees no jump of earlier items.
        task = progress.add_task(batch_id, total=batch["request_counts"]["total"] or None, completed=already,
                                 rate=0.0)
        while True:
            done = _ended(batch)
            progress.update(task, total=batch["request_counts"]["total"] or None, completed=done,
                            description=f"{batch_id} {batch['status']}",
                            rate=(done - already) / max(time.monotonic() - started, 1e-6))
            if batch["status"] in TERMINAL:
                break
            time.sleep(0.5)
            batch = server.call("GET", f"/v1/batches/{batch_id}").json()
    counts = batch["request_counts"]
    console.print(f"{batch_id}: {batch['status']} — {counts['completed']} succeeded, {counts['failed']} failed, "
                  f"{counts.get('cancelled', 0)} cancelled")
    return batch


def _ended(batch: Mapping[str, Any]) -> int:
    counts = batch["request_counts"]
    return int(counts["completed"] + counts["failed"] + counts.get("cancelled", 0))


def download(server: Server, batch_id: str, out: Path) -> None:
    fmt = "csv" if out.suffix.lower() == ".csv" else "jsonl"
    response = server.call("GET", f"/v1/batches/{batch_id}/results", params={"format": fmt}, stream=True)
    with out.open("wb") as handle:
        for chunk in response.iter_content(chunk_size=256 * 1024):
            handle.write(chunk)
    console.print(f"results written to {out}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


COMMANDS = (submit, status, results, cancel)
