"""Backends a test can take away: a private Redis it kills and restarts, and a TCP proxy in front of Postgres
that it cuts and restores; and a whole VLQ stack on them. Never the shared servers: other sessions' tests use
those."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import redis
import yaml
from sqlalchemy.engine import make_url

from service.core.config import Settings, load_settings
from tests.conftest import ALIASES, TINY, WorkerProcess, postgres_schema, tiny_model_cache


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A `redis-server` of our own on a free port, without persistence: a restart loses every message, as a
    crashed broker would."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self._log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self._log_dir), "--logfile", str(self._log_dir / f"redis-{self.port}.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        for _ in range(100):
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; connected clients see their sockets close."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, down_s: float) -> None:
        self.kill()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        self.kill()


class TcpProxy:
    """Forwards a local port to `target`. `cut()` resets every open connection and refuses new ones (accepted, then
    closed at once, as a server going down does) until `restore()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            doomed, self._open = self._open, set()
        for sock in doomed:
            _hang_up(sock)

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                _hang_up(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _hang_up(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with self._lock:
                    self._open.discard(sock)
                _hang_up(sock)


def _hang_up(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class FaultyStack:
    """VLQ on backends a test may take away: a private Redis, Postgres behind a `TcpProxy` (a private schema),
    a config file every process reads, and `vlq` processes (workers, beat, the API) started on demand."""

    def __init__(self, root: Path, **config: Any) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._exit = contextlib.ExitStack()
        self.redis = PrivateRedis(root)
        self._exit.callback(self.redis.close)
        self.direct_database_url = self._exit.enter_context(postgres_schema())
        direct = make_url(self.direct_database_url)
        self.proxy = TcpProxy((direct.host or "127.0.0.1", direct.port or 5432))
        self._exit.callback(self.proxy.close)
        self.database_url = direct.set(host="127.0.0.1", port=self.proxy.port).render_as_string(hide_password=False)
        self.config_file = root / "config.yaml"
        models = {name: {"source": "builtin:tiny-random", "weight_format": "fp16", "max_pixels": 128 * 128}
                  for name in (TINY, *ALIASES)}
        self.config_file.write_text(yaml.safe_dump({
            "database_url": self.database_url, "redis_url": self.redis.url, "blob_dir": str(root / "blobs"),
            "model_cache": str(tiny_model_cache()), "batch_size": 4, "default_model": TINY, "job_timeout_s": 30,
            "heartbeat_interval_s": 0.5, "heartbeat_ttl_s": 3, "sweep_interval_s": 1, "dispatch_grace_s": 1,
            "shutdown_grace_s": 10, "egress_allow_cidrs": ["127.0.0.0/8"], "models": models, **config}))
        self.processes: list[WorkerProcess] = []
        self._exit.callback(self._stop_all)

    @property
    def settings(self) -> Settings:
        return load_settings(environ={"VLQ_CONFIG": str(self.config_file)})

    def start(self, command: str = "worker", *, cwd: Path | None = None, **env: str) -> WorkerProcess:
        """A `vlq <command>` process on this stack (env: VLQ_* overrides; cwd: a host's own directory)."""
        process = WorkerProcess(self.config_file, self.root / f"{command}-{len(self.processes)}.log", command,
                                **({"cwd": cwd} if cwd else {}), **env)
        self.processes.append(process)
        return process

    def start_worker(self, models: str = TINY, **env: str) -> WorkerProcess:
        """A worker serving `models`, once it has them live."""
        process = self.start("worker", VLQ_MODELS=models, **env)
        process.wait_live(models.split(",")[0], redis_url=self.redis.url)
        return process

    def close(self) -> None:
        self._exit.close()

    def _stop_all(self) -> None:
        for process in self.processes:
            process.stop()
