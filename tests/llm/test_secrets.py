"""Secret references, the TTL cache and redaction. Secrets Manager and SSM are reached with the
real boto3 clients pointed at a recording fake of their JSON protocol on loopback."""

from __future__ import annotations

import json

import pytest

from spotline.secrets import SecretNotFound, SecretResolver, redact, register_secret
from tests.llm.fake_servers import Recorder
from tests.http_boundary import fake_aws_credentials, loopback_server, no_proxies

VALUE = "sm-9c1d2e3f-rotating-secret"


@pytest.fixture(autouse=True)
def _aws(monkeypatch):
    no_proxies(monkeypatch)
    fake_aws_credentials(monkeypatch, "AKIAFAKEFAKEFAKE", "fake-secret-access-key-for-tests")


def aws_secret_store(values: dict[str, str]):
    def script(n, body, headers):
        target = headers.get("X-Amz-Target", "")
        if target == "secretsmanager.GetSecretValue":
            sid = body["SecretId"]
            if sid not in values:
                return 400, {"x-amzn-ErrorType": "ResourceNotFoundException"}, {
                    "__type": "ResourceNotFoundException", "Message": "Secrets Manager can't find the secret."}
            return 200, {}, {"ARN": f"arn:aws:secretsmanager:us-east-1:1:secret:{sid}", "Name": sid,
                             "SecretString": values[sid], "VersionId": "v1"}
        if target == "AmazonSSM.GetParameter":
            assert body["WithDecryption"] is True
            return 200, {}, {"Parameter": {"Name": body["Name"], "Type": "SecureString",
                                           "Value": values[body["Name"]], "Version": 1}}
        return 400, {}, {"__type": "UnknownOperationException"}

    return Recorder(script)


def test_env_reference_and_ttl_cache():
    now = [1000.0]
    import os

    os.environ["SPOTLINE_TEST_SECRET"] = "first-value-1234"
    try:
        r = SecretResolver(ttl_s=300, clock=lambda: now[0])
        assert r.get("env:SPOTLINE_TEST_SECRET").get_secret_value() == "first-value-1234"
        os.environ["SPOTLINE_TEST_SECRET"] = "rotated-value-5678"
        now[0] += 299
        assert r.get("env:SPOTLINE_TEST_SECRET").get_secret_value() == "first-value-1234"  # cached
        now[0] += 2
        assert r.get("env:SPOTLINE_TEST_SECRET").get_secret_value() == "rotated-value-5678"  # TTL passed
        assert r.fetches == 2
    finally:
        del os.environ["SPOTLINE_TEST_SECRET"]


def test_secrets_manager_json_field_and_ssm_with_one_fetch_per_ttl():
    rec = aws_secret_store({"prod/openai": json.dumps({"api_key": VALUE}), "/spotline/key": "ssm-value-abcdef"})
    with loopback_server(rec.handler()) as url:
        r = SecretResolver(ttl_s=300, endpoint_urls={"secretsmanager": url, "ssm": url})
        for _ in range(5):
            assert r.get("secretsmanager:prod/openai#api_key").get_secret_value() == VALUE
            assert r.get("ssm:/spotline/key").get_secret_value() == "ssm-value-abcdef"
    assert len(rec.requests) == 2  # five reads each, one round trip each within the TTL
    assert VALUE not in repr(r.get("secretsmanager:prod/openai#api_key"))


def test_missing_secrets_fail_clearly_without_values():
    rec = aws_secret_store({"prod/notjson": VALUE})
    with loopback_server(rec.handler()) as url:
        r = SecretResolver(endpoint_urls={"secretsmanager": url})
        with pytest.raises(SecretNotFound, match="not a JSON object"):
            r.get("secretsmanager:prod/notjson#api_key")
        with pytest.raises(Exception, match="ResourceNotFoundException"):
            r.get("secretsmanager:prod/absent")
    with pytest.raises(SecretNotFound, match="is not set"):
        SecretResolver().get("env:SPOTLINE_DEFINITELY_UNSET")
    with pytest.raises(SecretNotFound, match="unknown secret scheme"):
        SecretResolver().get("vault:x")


def test_redact_masks_every_resolved_value():
    register_secret("tok-abcdef-123456")
    assert redact("auth failed for tok-abcdef-123456!") == "auth failed for ***!"
    assert redact("nothing to hide") == "nothing to hide"
