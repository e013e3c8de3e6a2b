"""The chaos run at a reduced size (`make chaos` runs 1,000 jobs): worker SIGKILLs, a Redis restart and a Postgres
cut while jobs run, and not one job, result or webhook event lost or doubled."""
import pytest

from tests.e2e.chaos.harness import ChaosConfig, run


@pytest.mark.chaos
def test_a_chaos_run_loses_nothing_and_doubles_nothing(model_cache, tmp_path):
    config = ChaosConfig(jobs=150, workers=2, kill_every_s=4)
    figures = run(config, tmp_path)
    print(figures.render(config))
    assert figures.accepted == config.jobs
    assert figures.kills >= 1 and figures.redis_restarts == 1 and figures.postgres_cuts == 1
    assert figures.lost == {"never_stored": 0, "never_ended": 0, "result": 0, "webhook_event": 0}
    assert figures.duplicated == {"job": 0, "ending": 0, "webhook_event": 0}
    assert figures.completed + sum(figures.failed.values()) == config.jobs
