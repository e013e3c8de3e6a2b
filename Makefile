# VLQ. `make run` and `make test` work on a fresh machine: they install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test fuzz test-fast screenshots bench bench-full bench-peer bench-tune eval chaos chaos-hosts tiny migrate worker api beat flower lock clean

run: $(STAMP) tiny  ## install, build the tiny model if missing, migrate, start API + worker + beat + Flower (:5555)
	$(BIN)/vlq run

test: $(STAMP)  ## the whole suite against real Redis, SQLite, Postgres and worker processes
	$(BIN)/pytest

test-fast: $(STAMP)  ## the rest, in under a minute: no worker process, browser, schemathesis run, Postgres or model build
	$(BIN)/pytest -m "not (chaos or browser or schemathesis or postgres or worker)"

screenshots: $(STAMP)  ## the web UI tests, keeping their screenshots in docs/screenshots for the README
	VLQ_SCREENSHOT_DIR=docs/screenshots $(BIN)/pytest tests/e2e/test_web_ui.py -k sqlite

bench: $(STAMP) tiny  ## raw engine vs service; local vs S3 blobs; PDF render time and memory (300 pages); the service's own costs at 100,000 items
	$(BIN)/python -m bench.service_bench
	$(BIN)/python -m bench.blob_bench
	$(BIN)/python -m bench.document_bench --pages 300 --write docs/BENCHMARKS.md
	$(BIN)/python -m bench.scale_bench --items 100000

bench-full: $(STAMP)  ## the 2B architecture: PyTorch fp32/bf16 vs OpenVINO int8/int4 x batch vs service (~25 min here)
	$(BIN)/python -m bench.full_bench --tune no-dynamic-quantization,f32-compute,kv-f16,prefix-caching,batched-tokens-1024,threads-1,no-pinning,max-pixels-100k,int4-g64,int4-g32 --write docs/BENCHMARKS.md

bench-peer: $(STAMP)  ## llama.cpp (built here from PyPI's llama-cpp-python sdist) vs VLQ's engine and service, same 2B checkpoint
	$(BIN)/python -m bench.peer_bench --write docs/BENCHMARKS.md

bench-tune: $(STAMP)  ## engine settings in paired rounds against int8 batch 8 (drift-proof ratios, ~10 min here)
	$(BIN)/python -m bench.tuning --variants dq-group-128,dq-group-256,kv-f16,no-pinning --rounds 3 --write docs/BENCHMARKS.md

eval: $(STAMP)  ## OCR quality (CER, field exact match) and grounded fields on multi-page PDF/TIFF invoices -> docs/BENCHMARKS.md
	$(BIN)/python -m bench.ocr_eval --count 20 --write docs/BENCHMARKS.md
	$(BIN)/python -m bench.grounding_eval --documents 4 --write docs/BENCHMARKS.md

fuzz: $(STAMP) tiny  ## hostile inputs against a live API and worker: status, peak RSS and time per case
	$(BIN)/python -m bench.fuzz

chaos: $(STAMP)  ## fault injection at full size: 1,000 jobs, worker SIGKILLs, a Redis restart, a Postgres cut
	$(BIN)/python -m tests.e2e.chaos.harness --jobs 1000

chaos-hosts: $(STAMP)  ## the same on two hosts that share no directory: blobs and the model on S3 (moto's server)
	$(BIN)/python -m tests.e2e.chaos.harness --jobs 1000 --hosts 2 --s3

tiny: $(STAMP)  ## build and export the tiny random-weight Qwen3-VL (offline, once)
	$(BIN)/vlq model build-tiny

migrate: $(STAMP)
	$(BIN)/vlq db upgrade

worker: $(STAMP)
	$(BIN)/vlq worker

api: $(STAMP)
	$(BIN)/vlq api

beat: $(STAMP)
	$(BIN)/vlq beat

flower: $(STAMP)
	$(BIN)/vlq flower

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# --no-deps: the lock is complete, and this keeps the resolver from pulling torchvision or CUDA torch.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

lock:  ## re-pin requirements.lock from the current .venv
	$(BIN)/pip freeze --all --exclude-editable | grep -vE '^(torchvision|pip)==' | sed 's/^torch==\(.*\)+cpu/torch==\1/' > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf .cache .pytest_cache
