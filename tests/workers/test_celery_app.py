"""What Flower can display: the Celery configuration and task arguments carry no secret."""
from __future__ import annotations

import base64
import dataclasses
import json

from celery.worker.control import _wanted_config_key
from kombu.utils.json import dumps
from sqlalchemy import select

from service.adapters.broker import Broker
from service.core.config import load_settings
from service.core.models import WebhookDelivery
from service.core.webhook_signing import generate_secret
from tests.conftest import finished_job
from workers.celery_app import create_celery


def test_the_configuration_flower_shows_holds_no_setting_or_secret(config_file):
    secret = generate_secret()
    settings = load_settings({"webhook_secret": secret, "flower_basic_auth": "ops:flower-password",
                              "database_url": "postgresql+psycopg://vlq:db-password@db:5432/vlq"},
                             environ={"VLQ_CONFIG": str(config_file)})
    app = create_celery(settings)
    # What a worker answers to `inspect conf`, which Flower's worker page shows.
    shown = dumps({key: value for key, value in app.conf.table(with_defaults=False).items()
                   if _wanted_config_key(key)}, default=repr)
    for value in (secret, "flower-password", "db-password", settings.database_url):
        assert value not in shown
    assert app.vlq_settings is settings  # the settings live beside the app


def test_task_messages_carry_ids_only(db, settings, receiver):
    job_id = finished_job(db, webhook_url=receiver.url, webhook_secret=receiver.secret)
    broker = Broker(dataclasses.replace(settings, webhook_queue="vlq.test.inspect"), db)
    try:
        with db.session() as session:
            delivery_id = session.scalar(select(WebhookDelivery.id).where(WebhookDelivery.subject_id == job_id))
        broker.enqueue_delivery(delivery_id)
        [raw] = broker.redis.lrange("vlq.test.inspect", 0, -1)  # the message as a monitor sees it
        args, kwargs, _ = json.loads(base64.b64decode(json.loads(raw)["body"]))
        assert (args, kwargs) == ([delivery_id], {})
        assert receiver.secret not in raw.decode()
    finally:
        broker.redis.delete("vlq.test.inspect")
        broker.close()
