"""The chaos run: a real VLQ stack works through N jobs while it takes faults, and must lose or double nothing.

    python -m tests.e2e.chaos.harness [--jobs 1000] [--workers 3] [--kill-every 5] [--rate 10]      # `make chaos`
    python -m tests.e2e.chaos.harness --hosts 2 --s3                                       # `make chaos-hosts`

The stack (tests/e2e/faults.py): the API under gunicorn, worker processes serving the tiny model, two beats (as a
careless deployment might run), a private Redis without persistence, and Postgres behind a proxy. While the jobs
are submitted and run, a worker is SIGKILLed every --kill-every seconds (and a new one started), Redis is killed
and restarted once (every queued message is lost), and Postgres is cut once. Clients retry a 503 with the same
Idempotency-Key; jobs arrive at --rate per second. Every job carries a webhook_url: a receiver verifies each
delivery and counts events by id.

Figures: accepted, completed, failed by reason, lost (a job missing, never ended, a succeeded job without its
result, or a job whose terminal event never arrived) and duplicated (a second job for one request, a second
terminal transition, or a second distinct event id for one job). Webhooks are at-least-once: the same event id
delivered again is counted as a redelivery, not a duplicate. Exits 1 if lost or duplicated is not 0.

With `--hosts N --s3` the workers run as N hosts that share no directory (tests/e2e/chaos/s3_hosts.py): blobs
and the model are in an S3 bucket, each host pulls the model into its own cache, and a killed worker is replaced
on its own host.
"""
from __future__ import annotations

import argparse
import base64
import collections
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests
from sqlalchemy import func, select

from service.adapters import presence
from service.adapters.db import Database
from service.core.models import TERMINAL_STATES, Job, JobEvent, WebhookDelivery
from tests.conftest import TINY, Receiver, WorkerProcess, make_image, make_key, tiny_model_cache
from tests.e2e.chaos.s3_hosts import S3Hosts
from tests.e2e.faults import FaultyStack, free_port

_ENDED = {status.value for status in TERMINAL_STATES}


@dataclass(frozen=True)
class ChaosConfig:
    jobs: int = 1000
    workers: int = 3
    kill_every_s: float = 5.0
    max_tokens: int = 48
    rate_per_s: float = 10.0  # jobs arrive at this pace, so every fault meets both submissions and running jobs
    submitters: int = 4
    redis_down_s: float = 3.0
    postgres_down_s: float = 3.0
    timeout_s: float = 900.0
    seed: int = 7
    hosts: int = 1
    s3: bool = False  # blobs and models in a bucket; with hosts > 1, the workers share no directory


@dataclass
class Figures:
    accepted: int = 0
    completed: int = 0
    failed: collections.Counter[str] = field(default_factory=collections.Counter)
    cancelled: int = 0
    lost: dict[str, int] = field(default_factory=lambda: {"never_stored": 0, "never_ended": 0, "result": 0,
                                                          "webhook_event": 0})
    duplicated: dict[str, int] = field(default_factory=lambda: {"job": 0, "ending": 0, "webhook_event": 0})
    refused: collections.Counter[str] = field(default_factory=collections.Counter)  # answers clients retried
    accepted_while_redis_down: int = 0
    redeliveries: int = 0  # an event id delivered again after the receiver answered 2xx
    kills: int = 0
    crashes: int = 0  # workers that exited on their own and were restarted, as a process manager would
    redis_restarts: int = 0
    postgres_cuts: int = 0
    hosts_pulled: int = 0  # --s3: hosts whose workers got the model by pulling it
    local_blob_dirs: int = 0  # --s3: blob directories any process made on local disk (there must be none)
    elapsed_s: float = 0.0

    @property
    def lost_total(self) -> int:
        return sum(self.lost.values())

    @property
    def duplicated_total(self) -> int:
        return sum(self.duplicated.values())

    def render(self, config: ChaosConfig) -> str:
        failed = ", ".join(f"{code}: {count}" for code, count in sorted(self.failed.items())) or "-"
        refused = ", ".join(f"{code}: {count}" for code, count in sorted(self.refused.items())) or "-"
        return "\n".join([
            f"chaos run: {config.jobs} jobs, {config.workers} workers, {self.kills} worker SIGKILLs, "
            f"{self.redis_restarts} Redis restart ({config.redis_down_s:g}s down), "
            f"{self.postgres_cuts} Postgres cut ({config.postgres_down_s:g}s), in {self.elapsed_s:.0f}s",
            f"  accepted     {self.accepted:6d}   ({self.accepted_while_redis_down} while Redis was down; "
            f"answers retried: {refused})",
            f"  completed    {self.completed:6d}",
            f"  failed       {sum(self.failed.values()):6d}   ({failed})",
            f"  cancelled    {self.cancelled:6d}",
            f"  lost         {self.lost_total:6d}   {self.lost}",
            f"  duplicated   {self.duplicated_total:6d}   {self.duplicated}",
            f"  webhooks: {self.redeliveries} redeliveries of an event id the receiver had already taken "
            "(at-least-once)",
            f"  workers that exited on their own and were restarted: {self.crashes}",
            *([f"  hosts: {config.hosts}, sharing no directory: blobs and the model on S3; {self.hosts_pulled} "
               f"pulled the model, {self.local_blob_dirs} local blob directories"] if config.s3 else []),
        ])


class ChaosRun:
    def __init__(self, config: ChaosConfig, root: Path) -> None:
        self.config = config
        self.figures = Figures()
        self.random = random.Random(config.seed)
        self.receiver = Receiver(timeout_s=2)
        self.receiver.script(*[503] * 5)  # a few retries from the start, on top of the faults
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.hosts = S3Hosts(root / "hosts", config.hosts, tiny_model_cache()) if config.s3 else None
        self.stack = FaultyStack(root, port=port, webhook_timeout_s=2, webhook_retry_schedule_s=[0, 0.5, 1, 2, 4, 8],
                                 job_timeout_s=20, **({"blob_url": self.hosts.blob_url} if self.hosts else {}))
        self._host_of: dict[int, int] = {}  # worker pid -> its host (--s3)
        self.direct = Database(self.stack.direct_database_url)  # the harness reads past the proxy
        # The submitters' key: unlimited, so the run measures faults, not the rate limit.
        self.api_key = make_key(self.stack.settings, rate_limit_rps=0, max_queued_jobs=0)
        self.accepted: dict[str, str] = {}  # Idempotency-Key -> job id
        self.workers: list[WorkerProcess] = []
        self._serving_since: dict[int, float] = {}  # worker pid -> when it was first seen serving
        self._lock = threading.Lock()
        self._redis_down = threading.Event()
        self._submitted = threading.Event()
        self._done = threading.Event()
        self._started = 0.0

    def run(self) -> Figures:
        started = time.monotonic()
        try:
            self._start_services()
            chaos = threading.Thread(target=self._chaos, name="chaos", daemon=True)
            chaos.start()
            self._submit_all()
            self._submitted.set()
            self._wait_until_ended()
            self._done.set()
            chaos.join()
            self._wait_for_deliveries()
            self._count()
        finally:
            self._done.set()
            self.figures.elapsed_s = time.monotonic() - started
            self.direct.dispose()
            self.receiver.close()
            self.stack.close()
            if self.hosts is not None:
                self.hosts.close()
        return self.figures

    # -- the stack --------------------------------------------------------------------------------

    def _start_services(self) -> None:
        self.stack.start("api")
        self.stack.start("beat")
        self.stack.start("beat")
        self.workers = [self._new_worker() for _ in range(self.config.workers)]
        for worker in self.workers:
            worker.wait_live(TINY, timeout=300, redis_url=self.stack.redis.url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base}/healthz", timeout=2).ok:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("the API did not start")

    # -- clients ----------------------------------------------------------------------------------

    def _submit_all(self) -> None:
        self._started = time.monotonic()
        keys = iter(range(self.config.jobs))
        threads = [threading.Thread(target=self._submitter, args=(keys,), daemon=True)
                   for _ in range(self.config.submitters)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _submitter(self, keys) -> None:  # type: ignore[no-untyped-def]
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {self.api_key}"
        while True:
            with self._lock:
                index = next(keys, None)
            if index is None:
                return
            time.sleep(max(0.0, self._started + index / self.config.rate_per_s - time.monotonic()))
            self._submit(http, f"chaos-{index}", make_image(color=(index % 256, index // 256, 99)))

    def _submit(self, http: requests.Session, key: str, image: bytes) -> None:
        """POST until accepted, retrying a 503 or a dropped connection under the same Idempotency-Key."""
        body = {"image": base64.b64encode(image).decode(), "prompt": "Read it.", "ignore_eos": True,
                "max_tokens": self.config.max_tokens, "webhook_url": self.receiver.url,
                "webhook_secret": self.receiver.secret, "metadata": {"key": key}}
        while True:
            try:
                response = http.post(f"{self.base}/v1/jobs", json=body, headers={"Idempotency-Key": key}, timeout=30)
            except requests.RequestException as exc:
                self._refused(type(exc).__name__)
                continue
            if response.status_code == 202:
                job_id = response.json()["id"]
                with self._lock:
                    if self.accepted.setdefault(key, job_id) != job_id:
                        self.figures.duplicated["job"] += 1
                    elif self._redis_down.is_set():
                        self.figures.accepted_while_redis_down += 1
                return
            if response.status_code != 503:
                raise RuntimeError(f"submit answered {response.status_code}: {response.text}")
            self._refused(response.json()["error"]["code"])

    def _refused(self, why: str) -> None:
        with self._lock:
            self.figures.refused[why] += 1
        time.sleep(0.3)

    # -- faults -----------------------------------------------------------------------------------

    def _chaos(self) -> None:
        next_kill = time.monotonic() + self.config.kill_every_s
        while not self._done.wait(0.2):
            self._restart_exited_workers()
            progress = len(self.accepted) / self.config.jobs
            # The first SIGKILL lands before Redis restarts: the restart can end every worker (see
            # `_restart_exited_workers`), and on a fast machine their replacements might not settle again before the
            # run is nearly done, leaving a run without a kill.
            kill_pending = self.config.kill_every_s > 0 and not self.figures.kills and not self._nearly_done()
            if not self.figures.redis_restarts and progress >= 1 / 3 and not kill_pending:
                self._restart_redis()
            elif not self.figures.postgres_cuts and progress >= 2 / 3:
                self._cut_postgres()
            elif time.monotonic() >= next_kill and not self._nearly_done() and self._kill_a_worker():
                next_kill = time.monotonic() + self.config.kill_every_s

    def _restart_redis(self) -> None:
        self._redis_down.set()
        self.stack.redis.kill()
        time.sleep(self.config.redis_down_s)
        self.stack.redis.start()
        self._redis_down.clear()
        self.figures.redis_restarts += 1

    def _cut_postgres(self) -> None:
        self.stack.proxy.cut()
        time.sleep(self.config.postgres_down_s)
        self.stack.proxy.restore()
        self.figures.postgres_cuts += 1

    def _kill_a_worker(self) -> bool:
        """SIGKILL a worker that has been serving for a while, once every worker serves (a replacement takes a
        while to load its model). A worker killed the instant it took its first tasks, before it could claim
        them, would hold them back for the visibility timeout (README, Reliability): real, but a rare tail."""
        live = self._serving()
        if len(live) < self.config.workers:
            return False
        now = time.monotonic()
        settled = [worker for worker in live if now - self._serving_since.setdefault(worker.process.pid, now) >= 3]
        if not settled:
            return False
        victim = self.random.choice(settled)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        self.workers.remove(victim)
        self.workers.append(self._new_worker(self._host_of.get(victim.process.pid)))
        self.figures.kills += 1
        return True

    def _new_worker(self, host: int | None = None) -> WorkerProcess:
        """A worker process; with --s3, on a host (the given one, or the next in turn) in its own directory."""
        if self.hosts is None:
            return self.stack.start("worker", VLQ_MODELS=TINY)
        index, path, env = self.hosts.place(host)
        worker = self.stack.start("worker", cwd=path, VLQ_MODELS=TINY, **env)
        self._host_of[worker.process.pid] = index
        return worker

    def _restart_exited_workers(self) -> None:
        """Start a new worker for each one that exited by itself, as compose's restart policy or systemd would.

        A worker can exit when Redis goes away under it: kombu's Redis transport fails restoring unacknowledged
        messages ("Unrecoverable error: ... no attribute 'hostname'") and Celery stops. Its jobs are not lost
        (orphan recovery requeues them); the count is reported, not hidden.
        """
        for worker in [worker for worker in self.workers if worker.process.poll() is not None]:
            self.workers.remove(worker)
            self.workers.append(self._new_worker(self._host_of.get(worker.process.pid)))
            self.figures.crashes += 1

    def _serving(self) -> list[WorkerProcess]:
        try:
            announced = presence.live_workers(redis.Redis.from_url(self.stack.redis.url, socket_timeout=2))
        except redis.RedisError:
            return []
        pids = {info["pid"] for info in announced.values() if info["models"].get(TINY, {}).get("status") == "live"}
        return [worker for worker in self.workers if worker.process.poll() is None and worker.process.pid in pids]

    def _nearly_done(self) -> bool:
        """Kills stop once nine in ten jobs ended, so the run converges instead of restarting workers forever."""
        return self._submitted.is_set() and self._ended_count() >= 0.9 * len(self.accepted)

    # -- waiting and counting ---------------------------------------------------------------------

    def _ended_count(self) -> int:
        with self.direct.session() as session:
            return session.scalar(select(func.count()).select_from(Job).where(
                Job.idempotency_key.like("chaos-%"), Job.status.in_(_ENDED))) or 0

    def _wait_until_ended(self) -> None:
        deadline = time.monotonic() + self.config.timeout_s
        while time.monotonic() < deadline:
            ended = self._ended_count()
            print(f"  {len(self.accepted)} accepted, {ended} ended, {len(self.receiver.deliveries)} deliveries",
                  flush=True)
            if ended >= len(self.accepted):
                return
            time.sleep(5)

    def _wait_for_deliveries(self) -> None:
        """Until no delivery of these jobs is pending any more (each ended delivered or failed)."""
        ids = list(self.accepted.values())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with self.direct.session() as session:
                pending = session.scalar(select(func.count()).select_from(WebhookDelivery).where(
                    WebhookDelivery.subject_id.in_(ids), WebhookDelivery.status == "pending")) or 0
            if not pending:
                return
            time.sleep(1)

    def _count(self) -> None:
        figures = self.figures
        figures.accepted = len(self.accepted)
        if self.hosts is not None:
            figures.hosts_pulled = self.hosts.pulled()
            figures.local_blob_dirs = len(self.hosts.local_blob_dirs()) + (self.stack.root / "blobs").is_dir()
        with self.direct.session() as session:
            jobs = {job.idempotency_key: job for job in session.scalars(
                select(Job).where(Job.idempotency_key.like("chaos-%")))}
            endings = dict(session.execute(
                select(JobEvent.job_id, func.count()).where(JobEvent.type.in_([f"job.{s}" for s in _ENDED]))
                .group_by(JobEvent.job_id)).all())
        figures.duplicated["job"] += max(0, len(jobs) - len(self.accepted))
        events: dict[str, set[str]] = collections.defaultdict(set)
        answered: set[str] = set()  # event ids the receiver already took (answered 2xx)
        for delivery in self.receiver.deliveries:
            if delivery.verified and delivery.payload["type"].startswith("job."):
                events[delivery.payload["data"]["id"]].add(delivery.webhook_id)
                figures.redeliveries += delivery.webhook_id in answered
                if delivery.answered is not None and 200 <= delivery.answered < 300:
                    answered.add(delivery.webhook_id)
        for key, job_id in self.accepted.items():
            job = jobs.get(key)
            if job is None or job.id != job_id:
                figures.lost["never_stored"] += 1
                continue
            if job.status not in _ENDED:
                figures.lost["never_ended"] += 1
                continue
            if job.status == "succeeded":
                figures.completed += 1
                figures.lost["result"] += job.result_text is None
            elif job.status == "failed":
                figures.failed[job.error_code or "unknown"] += 1
            else:
                figures.cancelled += 1
            figures.duplicated["ending"] += endings.get(job.id, 0) > 1
            figures.lost["webhook_event"] += not events.get(job.id)
            figures.duplicated["webhook_event"] += len(events.get(job.id, ())) > 1


def run(config: ChaosConfig, root: Path) -> Figures:
    return ChaosRun(config, root).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=ChaosConfig.jobs)
    parser.add_argument("--workers", type=int, default=ChaosConfig.workers)
    parser.add_argument("--kill-every", type=float, default=ChaosConfig.kill_every_s, help="seconds between SIGKILLs")
    parser.add_argument("--max-tokens", type=int, default=ChaosConfig.max_tokens)
    parser.add_argument("--rate", type=float, default=ChaosConfig.rate_per_s, help="jobs submitted per second")
    parser.add_argument("--seed", type=int, default=ChaosConfig.seed)
    parser.add_argument("--hosts", type=int, default=ChaosConfig.hosts, help="with --s3: hosts the workers spread over")
    parser.add_argument("--s3", action="store_true", help="blobs and models on S3; the hosts share no directory")
    parser.add_argument("--dir", type=Path, help="keep the processes' logs here (default: a temporary directory)")
    args = parser.parse_args()
    config = ChaosConfig(jobs=args.jobs, workers=args.workers, kill_every_s=args.kill_every,
                         max_tokens=args.max_tokens, rate_per_s=args.rate, seed=args.seed, hosts=args.hosts, s3=args.s3)
    if args.dir:
        figures = run(config, args.dir)
    else:
        with tempfile.TemporaryDirectory(prefix="vlq-chaos-") as root:
            figures = run(config, Path(root))
    print(figures.render(config))
    sys.exit(0 if figures.lost_total == 0 and figures.duplicated_total == 0 else 1)


if __name__ == "__main__":
    main()
