"""aiokafka clients configured the way synclife needs them (safe, not the defaults).

What a publishing or consuming service needs: connection and security options, the idempotent
producer, starting a client with a refused login reported as such. The service's command
consumer is in ``events.service.consumer``. Importing this module changes no logger: starting a
client (``start_client``) installs ``hide_raw_payloads`` on aiokafka's connection logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any, Final, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    ProducerClosed,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from events.errors import SynclifeError
from events.settings import KafkaSettings

__all__ = [
    "KafkaAuthError",
    "KafkaOptions",
    "hide_raw_payloads",
    "idempotent_producer",
    "kafka_options",
    "kafka_ssl_context",
    "login_refusal",
    "max_request_size",
    "start_client",
    "started_producer",
    "stop_producer",
    "throttle_metadata",
]

_REFUSED_LOGIN: Final = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
)

_SECRET_OPTIONS: Final = frozenset({"sasl_plain_password"})


class KafkaOptions(dict[str, Any]):
    """Keyword arguments of an aiokafka client. The SASL password is in it (aiokafka takes a
    plain ``str``), so its ``repr`` masks it: logging the options never shows the password."""

    def __repr__(self) -> str:
        shown = {k: ("**********" if k in _SECRET_OPTIONS else v) for k, v in self.items()}
        return f"KafkaOptions({shown!r})"

    __str__ = __repr__


def kafka_options(settings: KafkaSettings, **overrides: Any) -> KafkaOptions:
    """Where Kafka is and how to reach it: what every aiokafka client of synclife is given.

    Bootstrap servers, client id, request timeout, security protocol, the SASL mechanism and
    credentials (for ``SASL_*``) and an ``ssl.SSLContext`` (for ``SSL``/``SASL_SSL``), then
    ``overrides``.
    """
    protocol = settings.kafka_security_protocol
    options = KafkaOptions(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=settings.client_id,
        security_protocol=protocol,
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        password = settings.kafka_sasl_password
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = kafka_ssl_context(settings)
    options.update(overrides)
    return options


def kafka_ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """TLS to the brokers: verified against ``kafka_ssl_cafile`` (else the system's CAs), with
    the client certificate when one is set; the host name is checked unless turned off."""
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
    )
    # Still verifies the certificate chain; only the name in it is not compared to the host.
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def idempotent_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """acks=all and idempotence on: a retried send never duplicates or reorders a partition."""
    options: dict[str, Any] = {
        **kafka_options(settings),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
        "max_batch_size": 1_048_576,
        "max_request_size": max_request_size(settings),
    }
    options.update(overrides)
    producer = AIOKafkaProducer(**options)
    throttle_metadata(producer.client)
    return producer


async def started_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """``idempotent_producer(settings, **overrides)``, started (``start_client``); stopped
    again if it does not start."""
    producer = idempotent_producer(settings, **overrides)
    try:
        await start_client(producer, settings)
    except BaseException:
        with contextlib.suppress(Exception):
            await producer.stop()
        raise
    return producer


def max_request_size(settings: KafkaSettings) -> int:
    """The largest request, so the largest record, ``idempotent_producer`` sends: four times
    ``max_message_bytes``, what ``synclife stack up`` lets the output topics take."""
    return 4 * settings.max_message_bytes


async def stop_producer(producer: AIOKafkaProducer, within: float) -> None:
    """Stop ``producer`` for good in at most ``within`` seconds, failing what it still holds.

    A producer that had a batch fail is not to send again: with idempotence on, it numbered
    its later batches after the failed one, which the broker never took, so they fail too
    (OutOfOrderSequenceNumber). Its batches not yet acknowledged fail at once with
    ``ProducerClosed`` instead of being sent or retried (a request already on its way may still
    land: the caller sends those rows again, at least once). Never raises.
    """
    accumulator = getattr(producer, "_message_accumulator", None)
    if accumulator is not None:
        accumulator.fail_all(ProducerClosed())
    with contextlib.suppress(Exception):  # TimeoutError included
        await asyncio.wait_for(producer.stop(), within)


def throttle_metadata(client: Any) -> None:
    """Back off after a failed metadata update (aio-libs/aiokafka#496).

    While no broker answers, a producer holding batches for a partition without a known leader
    asks for metadata, the update fails at once (connection refused), and it asks again: a
    busy loop of thousands of attempts (and two ERROR lines each) a second, which starved a
    two-core machine during a broker restart. One pause of ``retry_backoff_ms`` after each
    failed update turns it into a few attempts a second; a successful update is not delayed.
    """
    update = getattr(client, "_metadata_update", None)
    if update is None:  # pragma: no cover - another aiokafka: leave it as it is
        return

    async def throttled(cluster_metadata: Any, topics: Any) -> bool:
        updated = bool(await update(cluster_metadata, topics))
        if not updated:
            await asyncio.sleep(getattr(client, "_retry_backoff", 0.1))
        return updated

    client._metadata_update = throttled


class KafkaAuthError(SynclifeError):
    """Kafka refused the login (SASL) or the TLS handshake failed: retrying will not help."""


class _Startable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def start_client(client: _Startable, settings: KafkaSettings) -> None:
    """``await client.start()``, with a refused login reported as ``KafkaAuthError``.

    aiokafka reports every failed bootstrap as a retriable ``KafkaConnectionError``; with a
    wrong password that would be retried forever. On that error this connects once more by
    hand to learn why: a refused login or TLS handshake stops the client and raises
    ``KafkaAuthError`` (not retriable); anything else re-raises the original error.
    """
    hide_raw_payloads()
    try:
        await client.start()
    except KafkaConnectionError as exc:
        refused = await login_refusal(settings)
        if refused is None:
            raise
        with contextlib.suppress(Exception):
            await client.stop()
        raise KafkaAuthError(refused) from exc


async def login_refusal(settings: KafkaSettings, *, within: float = 10.0) -> str | None:
    """Why the brokers refuse to let these settings in, or None (it works, or may later).

    The message names the broker, mechanism and user, never the password.
    """
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None  # nothing to refuse
    options = kafka_options(settings)
    reason: str | None = None
    for host, port, _ in collect_hosts(settings.kafka_bootstrap_servers):
        try:
            async with asyncio.timeout(within):
                conn = await create_conn(
                    host,
                    port,
                    client_id=options["client_id"],
                    request_timeout_ms=int(within * 1000),
                    ssl_context=options.get("ssl_context"),
                    security_protocol=options["security_protocol"],
                    sasl_mechanism=options.get("sasl_mechanism"),
                    sasl_plain_username=options.get("sasl_plain_username"),
                    sasl_plain_password=options.get("sasl_plain_password"),
                )
        except _REFUSED_LOGIN as exc:
            reason = (
                f"Kafka at {host}:{port} refused the {settings.kafka_sasl_mechanism} login of "
                f"{settings.kafka_sasl_username!r} ({exc}): check SYNCLIFE_KAFKA_SASL_USERNAME, "
                "SYNCLIFE_KAFKA_SASL_PASSWORD and SYNCLIFE_KAFKA_SASL_MECHANISM"
            )
        except ssl.SSLError as exc:
            reason = (
                f"the TLS handshake with Kafka at {host}:{port} failed ({exc}): check "
                "SYNCLIFE_KAFKA_SSL_CAFILE, SYNCLIFE_KAFKA_SSL_CERTFILE and "
                "SYNCLIFE_KAFKA_SECURITY_PROTOCOL"
            )
        except (OSError, TimeoutError, RuntimeError):  # aiokafka's errors are RuntimeErrors
            continue  # unreachable or not answering: may well work later
        else:
            conn.close()
            return None  # one broker lets us in: whatever failed, it was not the login
    return reason


class _NoRawPayloads(logging.Filter):
    """aiokafka logs every request and response at DEBUG with the struct's ``repr``, which
    shows the first 100 bytes of each record batch: the ``authorization`` header of a command
    can be among them. Keep the line, with the struct's name only."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args and hasattr(args[-1], "SCHEMA"):
            record.args = (*args[:-1], type(args[-1]).__name__)
        return True


def hide_raw_payloads() -> None:
    """Install the filter on aiokafka's connection logger (once)."""
    logger = logging.getLogger("aiokafka.conn")
    if not any(isinstance(f, _NoRawPayloads) for f in logger.filters):
        logger.addFilter(_NoRawPayloads())
