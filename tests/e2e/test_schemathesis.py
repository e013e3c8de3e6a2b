"""schemathesis against the live API and a real worker: no server error, and every answer matches the document."""
import dataclasses
import subprocess
import sys
from pathlib import Path

from service.app import create_app
from tests.conftest import TINY, serve

# positive_data_acceptance is left out: a schema cannot say which strings are decodable images or resolvable
# hosts, so schema-valid requests are rightly refused. ignored_auth and object_level_authorization are left out:
# the run has one key (tests/service/api/test_auth.py checks keys and tenants apart). `all` includes a response
# time check (10 s by default); a synchronous chat answer of 1,024 tokens on a loaded machine may take longer, and
# the server bounds it itself: it answers by sync_timeout_s (60 s in the tests), so that is the limit here.
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance,ignored_auth,object_level_authorization",
          "--max-response-time", "60", "--request-timeout", "90"]


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(settings, worker, client, api_key, tmp_path):
    # The API offers only the model the worker serves: a synchronous endpoint rightly answers 503 no_worker for
    # any other (tests/e2e/test_sync_end_to_end.py checks that), so here any 5xx is a bug.
    served = dataclasses.replace(settings, registry={TINY: settings.registry[TINY]}, presets={
        name: preset for name, preset in settings.presets.items() if preset.model in (None, TINY)})
    with serve(create_app(served)) as url:
        result = _schemathesis(client, url, api_key, tmp_path)
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "Server error" not in result.stdout


def _schemathesis(client, url, api_key, tmp_path) -> subprocess.CompletedProcess:
    before = {endpoint["id"] for endpoint in client.get("/v1/webhooks?limit=100").get_json()["data"]}
    command = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{url}/openapi.json", *CHECKS,
               "--header", f"Authorization: Bearer {api_key}",  # the session's key: not an admin, so /v1/keys is 403s
               "--max-examples", "20", "--seed", "20261121", "--no-shrink",
               "--report", "junit", "--report-dir", str(tmp_path)]
    try:
        # Run from tmp_path: schemathesis keeps its example cache in the working directory.
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    finally:
        # Endpoints it registered would receive every later test's events.
        for endpoint in client.get("/v1/webhooks?limit=100").get_json()["data"]:
            if endpoint["id"] not in before:
                client.delete(f"/v1/webhooks/{endpoint['id']}")
