"""Transport security settings: combinations are checked up front, and the password never shows."""

from __future__ import annotations

import os
import ssl
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from events.kafka import kafka_options
from events.service.db import postgres_ssl
from events.service.settings import Settings

PASSWORD = "pw-Zq8-never-shown"
SCRAM: dict[str, Any] = {
    "kafka_security_protocol": "SASL_PLAINTEXT",
    "kafka_sasl_mechanism": "SCRAM-SHA-256",
    "kafka_sasl_username": "synclife",
    "kafka_sasl_password": PASSWORD,
}


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test passes: no SYNCLIFE_KAFKA_S*/DATABASE_SSL* from the environment."""
    for name in list(os.environ):
        if name.startswith(("SYNCLIFE_KAFKA_S", "SYNCLIFE_DATABASE_SSL")):
            monkeypatch.delenv(name)


def test_the_default_is_plaintext_with_nothing_else() -> None:
    settings = Settings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.database_ssl is None
    options = kafka_options(settings)
    assert options["security_protocol"] == "PLAINTEXT"
    assert not {"sasl_mechanism", "sasl_plain_password", "ssl_context"} & set(options)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT"},
            "SASL_PLAINTEXT needs kafka_sasl_mechanism, kafka_sasl_username, kafka_sasl_password",
        ),
        ({**SCRAM, "kafka_sasl_username": ""}, "needs kafka_sasl_username"),
        ({**SCRAM, "kafka_sasl_password": ""}, "needs kafka_sasl_password"),
        (
            {**SCRAM, "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": None},
            "SASL_SSL needs kafka_sasl_mechanism",
        ),
        (
            {"kafka_sasl_username": "u", "kafka_sasl_password": "p"},
            "kafka_sasl_username, kafka_sasl_password set, but kafka_security_protocol is "
            "PLAINTEXT",
        ),
        ({**SCRAM, "kafka_ssl_cafile": "/ca.pem"}, "kafka_ssl_cafile set, but"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/key.pem"},
            "kafka_ssl_keyfile needs kafka_ssl_certfile",
        ),
        ({"database_ssl_rootcert": "/root.crt"}, "database_ssl verify-ca or verify-full"),
        (
            {"database_ssl": "require", "database_ssl_rootcert": "/root.crt"},
            "database_ssl verify-ca or verify-full",
        ),
        ({"kafka_security_protocol": "SASL"}, "kafka_security_protocol"),
        ({**SCRAM, "kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
        ({"database_ssl": "allow"}, "database_ssl"),
    ],
)
def test_invalid_combinations_are_refused_with_a_clear_message(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**fields)
    assert message in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_a_refused_combination_never_quotes_the_password() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**{**SCRAM, "kafka_sasl_username": None})
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(caught.value)
    assert PASSWORD not in repr(caught.value.errors(include_input=False))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_options_reach_aiokafka_and_the_password_stays_out_of_repr(mechanism: str) -> None:
    settings = Settings(**{**SCRAM, "kafka_sasl_mechanism": mechanism})
    assert isinstance(settings.kafka_sasl_password, SecretStr)
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert PASSWORD not in shown
    options = kafka_options(settings)
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == mechanism
    assert options["sasl_plain_username"] == "synclife"
    assert options["sasl_plain_password"] == PASSWORD  # what aiokafka is given
    assert "ssl_context" not in options
    for shown in (repr(options), str(options), f"{options}"):
        assert PASSWORD not in shown and "sasl_plain_password" in shown


def test_tls_options_build_a_verifying_context() -> None:
    ca = ssl.get_default_verify_paths().cafile
    settings = Settings(
        **{**SCRAM, "kafka_security_protocol": "SASL_SSL"},
        kafka_ssl_cafile=ca,
    )
    context = kafka_options(settings)["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname

    relaxed = Settings(kafka_security_protocol="SSL", kafka_ssl_check_hostname=False)
    context = kafka_options(relaxed)["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED and not context.check_hostname


def test_postgres_ssl_modes() -> None:
    assert postgres_ssl(Settings()) is None  # the URL decides
    for mode in ("disable", "prefer", "require"):
        assert postgres_ssl(Settings(database_ssl=mode)) == mode
    full = postgres_ssl(Settings(database_ssl="verify-full"))
    assert isinstance(full, ssl.SSLContext)
    assert full.verify_mode is ssl.CERT_REQUIRED and full.check_hostname
    ca = ssl.get_default_verify_paths().cafile
    verify_ca = postgres_ssl(Settings(database_ssl="verify-ca", database_ssl_rootcert=ca))
    assert isinstance(verify_ca, ssl.SSLContext)
    assert verify_ca.verify_mode is ssl.CERT_REQUIRED and not verify_ca.check_hostname


def test_the_environment_configures_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCLIFE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("SYNCLIFE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SYNCLIFE_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("SYNCLIFE_KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("SYNCLIFE_DATABASE_SSL", "require")
    settings = Settings()
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_sasl_password == SecretStr(PASSWORD)
    assert settings.database_ssl == "require"
    assert PASSWORD not in repr(settings)
