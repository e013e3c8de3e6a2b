"""`vlq keys create | list | revoke` on the configured database, and the warning `vlq run`/`vlq api` give."""
import dataclasses

from click.testing import CliRunner

from service.cli import _warn_if_auth_disabled, cli
from tests.conftest import keyed


def test_create_list_and_revoke_a_key(app, config_file):
    runner = CliRunner(env={"VLQ_CONFIG": str(config_file)})
    created = runner.invoke(cli, ["keys", "create", "--name", "nightly-etl", "--tenant", "umbrella", "--admin",
                                  "--rate-limit", "2.5", "--max-queued", "500"])
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("vlq_sk_") and "shown only now" in created.stderr
    key_id = created.stderr.split()[1]

    user = keyed(app.test_client(), secret)
    assert user.get("/v1/keys").status_code == 200  # an admin key

    listed = runner.invoke(cli, ["keys", "list"])
    [row] = [line for line in listed.stdout.splitlines() if line.startswith(key_id)]
    assert "nightly-etl" in row and "umbrella" in row and secret[:11] in row and "2.5" in row and "500" in row
    assert secret not in listed.stdout

    assert runner.invoke(cli, ["keys", "revoke", key_id]).exit_code == 0
    assert user.get("/v1/jobs").status_code == 401
    missing = runner.invoke(cli, ["keys", "revoke", "key_nope"])
    assert missing.exit_code != 0 and "no key" in missing.output


def test_create_refuses_a_bad_tenant(config_file):
    result = CliRunner(env={"VLQ_CONFIG": str(config_file)}).invoke(
        cli, ["keys", "create", "--name", "x", "--tenant", "two words"])
    assert result.exit_code != 0 and "tenant" in result.output


def test_serving_with_auth_disabled_prints_a_loud_warning(settings, capsys):
    _warn_if_auth_disabled(settings)
    assert capsys.readouterr().err == ""
    _warn_if_auth_disabled(dataclasses.replace(settings, disable_auth=True))
    assert "AUTHENTICATION IS DISABLED" in capsys.readouterr().err


def test_create_bucket_makes_the_bucket_once(s3_server, tmp_path):
    config = tmp_path / "config.yaml"
    bucket = f"made-by-cli-{tmp_path.name[-8:].lower().replace('_', '-')}"
    config.write_text(f"blob_url: s3://{bucket}/vlq\nlog_format: text\n")
    runner = CliRunner(env={"VLQ_CONFIG": str(config)})
    first, second = runner.invoke(cli, ["create-bucket"]), runner.invoke(cli, ["create-bucket"])
    assert first.exit_code == 0 and "created" in first.output, first.output
    assert second.exit_code == 0 and "already there" in second.output
    s3_server.client().head_bucket(Bucket=bucket)
