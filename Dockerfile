# The serving image: API, worker, beat and Flower all run from it. It leaves out torch, transformers'
# export stack, optimum and the browser-test driver: serving needs only OpenVINO GenAI. Export models where
# torch is installed (`make tiny`, `vlq model export NAME`) into the shared model-cache volume.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock pyproject.toml ./
RUN grep -vE '^(torch|nncf|optimum|optimum-intel|scikit-learn|scipy|playwright|pyee)==' requirements.lock > requirements.serve \
 && pip install --no-cache-dir --no-deps -r requirements.serve
COPY . .
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e .
# The copied config.yaml is for `make run`: auth off, webhooks allowed to reach loopback, the tiny model as default.
# The image serves networks, so it turns auth back on, refuses loopback webhooks, sets the default model back to the
# real one, and logs JSON lines even when run with a terminal (`docker run -t`).
ENV VLQ_BLOB_DIR=/data/blobs VLQ_MODEL_CACHE=/data/models VLQ_DISABLE_AUTH=false VLQ_DEFAULT_MODEL=qwen3-vl-2b \
    VLQ_WEBHOOK_ALLOW_LOOPBACK=false VLQ_LOG_FORMAT=json
CMD ["vlq", "api"]
