"""Hostile inputs against a live service: for each case, the status, the API's and the worker's peak RSS, the time.

    python -m bench.fuzz [--model tiny-random]

A real API (gunicorn) and worker on a scratch SQLite database and Redis db, as `make bench` starts them; every
request goes to loopback. The cases are issue 18's probe: a zip bomb, a poisoned schema next to another tenant's
jobs, JSON nested 1,000 deep, lone surrogates, 1e400, broken zips, formula-looking custom_ids in the CSV export,
a non-ASCII file name, memory-hungry and extreme-ratio images, a JSONL file that once left its batch validating,
and slow-drip image URLs while /healthz is timed. The zip bomb runs first, before any case loads the schema
compiler (xgrammar imports torch: about 300 MB in each API process that meets a schema outside VLQ's own regex
subset). Peak RSS is each process tree's VmHWM so far (a high-water mark), so a case's figure is the peak up to
and including it.
"""
from __future__ import annotations

import argparse
import io
import json
import struct
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml
from PIL import Image

from bench.service_bench import BASE, BENCH_PORT, BENCH_REDIS_URL, bench_key, start_service
from service.adapters.migrate import upgrade
from service.core.config import load_settings

POISONED = {"type": "object", "properties": {"a": {"$ref": "#/definitions/nope"}}, "required": ["a"]}


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


def _png16(side: int) -> bytes:
    """A 16-bit greyscale PNG of side x side zeros, written by hand (Pillow saves I;16 as 8-bit)."""
    row = b"\0" + b"\0\0" * side
    raw = zlib.compress(row * side, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _jpeg_bomb(side: int = 6000) -> bytes:
    """A tiny JPEG whose header claims side x side (a real 8x8 JPEG with its SOF dimensions rewritten)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def _zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as zipped:
        for name, data in entries.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


class _SlowDrip(BaseHTTPRequestHandler):
    """An image URL that answers 10 bytes every 0.5 s."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(200):
                self.wfile.write(b"\0" * 10)
                self.wfile.flush()
                time.sleep(0.5)
        except OSError:
            pass

    def log_message(self, *_: Any) -> None:
        pass


def _peak_mb(pid: int) -> float:
    """The largest VmHWM in a process tree, in MB."""
    peak = 0
    try:
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for process in tree:
        try:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random")
    args = parser.parse_args()
    base = load_settings()
    with tempfile.TemporaryDirectory(prefix="vlq-fuzz-") as tmp:
        drip = ThreadingHTTPServer(("127.0.0.1", 0), _SlowDrip)
        threading.Thread(target=drip.serve_forever, daemon=True).start()
        config = {
            "database_url": f"sqlite:///{tmp}/fuzz.db", "redis_url": BENCH_REDIS_URL, "blob_dir": f"{tmp}/blobs",
            "model_cache": str(Path(base.model_cache).resolve()), "port": BENCH_PORT, "default_model": args.model,
            "image_url_fetch": True, "image_url_timeout_s": 5, "egress_allow_cidrs": ["127.0.0.0/8"],
            "auth_failure_rate_per_s": 0,
        }
        settings_file = Path(tmp) / "config.yaml"
        settings_file.write_text(yaml.safe_dump(config))
        settings = load_settings(environ={"VLQ_CONFIG": str(settings_file)})
        upgrade(settings.database_url)
        key = bench_key(settings)
        other = bench_key(settings)
        service = start_service(settings_file, args.model, 1, key)
        api, worker = service.processes[0], service.processes[1]
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {key}"
        print(f"{'case':46} {'status':>8} {'API MB':>7} {'worker MB':>9} {'time s':>7}  note")

        def case(name: str, send: Callable[[], tuple[Any, str]]) -> None:
            started = time.monotonic()
            try:
                status, note = send()
            except requests.RequestException as exc:
                status, note = "error", str(exc)[:60]
            print(f"{name:46} {status!s:>8} {_peak_mb(api.pid):7.0f} {_peak_mb(worker.pid):9.0f} "
                  f"{time.monotonic() - started:7.1f}  {note}", flush=True)

        def job(image: bytes, **fields: Any) -> tuple[int, str]:
            response = http.post(f"{BASE}/v1/jobs", files={"image": ("i.png", image)},
                                 data={"prompt": "x", "max_tokens": "4", **fields})
            if response.status_code != 202:
                return response.status_code, response.json()["error"]["code"]
            return response.status_code, _ended(http, response.json()["id"])

        def poisoned_next_to_others() -> tuple[int, str]:
            neighbour = requests.Session()
            neighbour.headers["Authorization"] = f"Bearer {other}"
            ids = [neighbour.post(f"{BASE}/v1/jobs", files={"image": ("i.png", _png((64, 64)))},
                                  data={"prompt": "x", "max_tokens": "200", "ignore_eos": "true"}).json()["id"]
                   for _ in range(3)]
            status, code = job(_png((64, 64)), response_format=json.dumps(
                {"type": "json_schema", "json_schema": {"name": "p", "schema": POISONED}}))
            ends = [_ended(neighbour, job_id) for job_id in ids]
            return status, f"{code}; the other tenant's 3 jobs: {', '.join(ends)}"

        def post_json(path: str, body: str) -> tuple[int, str]:
            response = http.post(f"{BASE}{path}", data=body, headers={"Content-Type": "application/json"})
            return response.status_code, _code(response)

        def native_batch(archive: bytes, **fields: Any) -> tuple[int, str]:
            response = http.post(f"{BASE}/v1/batches", files={"archive": ("a.zip", archive)},
                                 data={"prompt": "x", "max_tokens": "2", **fields})
            return response.status_code, _code(response)

        def csv_export() -> tuple[int, str]:
            names = {"=cmd|' /C calc'!A0.png": _png((40, 40)), "+1.png": _png((40, 40)), "@a.png": _png((40, 40))}
            batch = http.post(f"{BASE}/v1/batches", files=[("images", (n, d)) for n, d in names.items()],
                              data={"prompt": "x", "max_tokens": "2"}).json()
            _batch_ended(http, batch["id"])
            text = http.get(f"{BASE}/v1/batches/{batch['id']}/results?format=csv").text
            raw = [line.split(",")[0] for line in text.splitlines()[1:]]
            return 200, "first cells: " + " ".join(raw)

        def unicode_download() -> tuple[int, str]:
            file = http.post(f"{BASE}/v1/files", files={"file": ("日本.jsonl", b"{}\n")},
                             data={"purpose": "batch"}).json()
            response = http.get(f"{BASE}/v1/files/{file['id']}/content")
            return response.status_code, response.headers.get("Content-Disposition", "")[:60]

        def hostile_jsonl() -> tuple[int, str]:
            lines = [b'{"custom_id": "s\\ud800x", "method": "POST", "url": "/v1/chat/completions"}',
                     b'{"custom_id": "d", "body": ' + _deep(100_000).encode() + b"}"]
            file = http.post(f"{BASE}/v1/files", files={"file": ("h.jsonl", b"\n".join(lines))},
                             data={"purpose": "batch"}).json()
            batch = http.post(f"{BASE}/v1/batches", json={"input_file_id": file["id"],
                                                          "endpoint": "/v1/chat/completions"}).json()
            ended = _batch_ended(http, batch["id"])
            return 200, f"batch {ended['status']}: " + ", ".join(e["code"] for e in ended["errors"]["data"])

        def slow_drip() -> tuple[int, str]:
            url = f"http://127.0.0.1:{drip.server_address[1]}/slow.png"
            body = json.dumps({"model": args.model, "max_tokens": 4, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url}}]}]})
            with ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(post_json, "/v1/chat/completions", body) for _ in range(8)]
                time.sleep(1.0)
                started = time.monotonic()
                healthz = requests.get(f"{BASE}/healthz", timeout=30).status_code
                healthz_s = time.monotonic() - started
                results = [future.result() for future in futures]
            codes = sorted({code for _, code in results})
            return results[0][0], f"/healthz {healthz} in {healthz_s:.2f}s while slow; codes {codes}"

        big_zeros = {f"{n}.png": bytes(21 * 1024 * 1024) for n in range(60)}
        case("zip bomb: 60 entries of 21 MB zeros", lambda: native_batch(_zip(big_zeros)))
        case("poisoned schema next to another tenant's jobs", poisoned_next_to_others)
        case("JSON body nested 1,000 deep", lambda: post_json("/v1/chat/completions", _deep(1000)))
        case("lone surrogate in a prompt (JSON)", lambda: post_json(
            "/api/v1/chat", '{"prompt": "a\\ud800b", "image": "data:image/png;base64,AAAA"}'))
        case("max_tokens 1e400", lambda: post_json("/v1/chat/completions", '{"max_tokens": 1e400, "messages": []}'))
        case("response_format nested 300 deep", lambda: job(_png((64, 64)), response_format=json.dumps(
            {"type": "json_schema", "json_schema": {"name": "d", "schema": json.loads(
                '{"type":"array","items":' * 300 + '{"type":"string"}' + "}" * 300)}})))
        case("zip with an unknown compression method",
             lambda: native_batch(_method_99(_zip({"a.png": _png((40, 40))}))))
        case("CSV export of formula-looking custom_ids", csv_export)
        case("download of a file named 日本.jsonl", unicode_download)
        case("16-bit PNG 6300x6300 (a job)", lambda: job(_png16(6300)))
        case("JPEG header claiming 6000x6000 (a job)", lambda: job(_jpeg_bomb()))
        case("thin strip 4000x40 (a job)", lambda: job(_png((4000, 40))))
        case("JSONL: lone surrogate custom_id, 100,000 deep", hostile_jsonl)
        case("8 slow-drip image URLs, /healthz timed", slow_drip)
        for process in service.processes:
            process.terminate()
        for process in service.processes:
            process.wait(timeout=30)
        drip.shutdown()


def _method_99(archive: bytes) -> bytes:
    data = bytearray(archive)
    for offset in (8, data.rfind(b"PK\x01\x02") + 10):
        data[offset:offset + 2] = (99).to_bytes(2, "little")
    return bytes(data)


def _code(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:40]
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("code") or error.get("status"))
    return str(body.get("code", "")) if "code" in body else str(body.get("status", ""))


def _ended(http: requests.Session, job_id: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"{BASE}/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job["status"] + (f" {job['error']['code']}" if job.get("error") else "")
        time.sleep(0.1)
    return "still " + job["status"]


def _batch_ended(http: requests.Session, batch_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = http.get(f"{BASE}/v1/batches/{batch_id}").json()
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return batch
        time.sleep(0.2)
    return batch


if __name__ == "__main__":
    sys.exit(main())
