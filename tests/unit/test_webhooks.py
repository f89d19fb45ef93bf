"""Webhooks: which callback URLs are accepted, Standard Webhooks signatures, and delivery from
the job store to a real HTTP receiver on loopback — signed, retried after a 500, given up after
`max_attempts`, skipped for a canceled song, and delivered again (same `webhook-id`) by another
worker after one was SIGKILLed mid-delivery."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from serve.config import AppConfig, WebhooksConfig, resolve_config
from serve.services import song_describer
from serve.store import JobStore
from serve.webhooks import (
    CallbackRefused,
    check_callback_addresses,
    check_callback_url,
    signature,
    verify,
)
from serve.workflow.webhooks import WebhookDispatcher
from tests.http_graph import api_client
from tests.store_backends import Backend
from tests.webhook_receiver import Delivery, running_receiver

SECRET = "whsec_" + base64.b64encode(b"a test signing key of 32 bytes!!").decode()


def _webhooks(**overrides: Any) -> dict[str, Any]:
    return {
        "allowed_hosts": ["127.0.0.1"],
        "allow_private_addresses": True,
        "allow_http": True,
        "signing_secret": SECRET,
        "backoff_s": 0.05,
        "backoff_max_s": 0.2,
        "lease_s": 2.0,
        "timeout_s": 1.0,
        **overrides,
    }


def _config(tmp_path: Path, **webhooks: Any) -> AppConfig:
    return resolve_config(
        {"storage": {"data_dir": str(tmp_path)}, "webhooks": _webhooks(**webhooks)}
    )


def _expected_signature(delivery: Delivery) -> str:
    """Computed here from the Standard Webhooks spec, not with serve.webhooks."""
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = (
        f"{delivery.headers['webhook-id']}.{delivery.headers['webhook-timestamp']}.".encode()
        + delivery.body
    )
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


# -- which URLs ----------------------------------------------------------------------------------


def test_callback_urls_must_be_allowed_hosts_over_https() -> None:
    config = WebhooksConfig(allowed_hosts=["hooks.example.com", "*.apps.example.org"])
    assert check_callback_url("https://hooks.example.com/songs", config) == (
        "hooks.example.com",
        443,
    )
    assert check_callback_url("https://a.b.apps.example.org:8443/x", config) == (
        "a.b.apps.example.org",
        8443,
    )
    refused = {
        "http://hooks.example.com/songs": "https",  # http needs webhooks.allow_http
        "https://evil.example.com/": "not allowed",
        "https://apps.example.org/": "not allowed",  # *.domain is its subdomains only
        "https://hooks.example.com.evil.net/": "not allowed",
        "https://user:pw@hooks.example.com/": "credentials",
        "ftp://hooks.example.com/": "https",
        "https:///path": "no host",
        "https://hooks.example.com:99999/": "not a URL",
    }
    for url, reason in refused.items():
        with pytest.raises(CallbackRefused, match=reason):
            check_callback_url(url, config)
    with pytest.raises(CallbackRefused, match=r"webhooks\.allowed_hosts is empty"):
        check_callback_url("https://hooks.example.com/", WebhooksConfig())


def test_private_addresses_are_refused_unless_configured() -> None:
    strict = WebhooksConfig(allowed_hosts=["localhost", "127.0.0.1"])
    for host in ("localhost", "127.0.0.1"):
        with pytest.raises(CallbackRefused, match="not a public address"):
            asyncio.run(check_callback_addresses(host, 80, strict))
    inside = WebhooksConfig(allowed_hosts=["127.0.0.1"], allow_private_addresses=True)
    asyncio.run(check_callback_addresses("127.0.0.1", 80, inside))


def test_a_request_naming_a_refused_callback_is_a_422_naming_the_field(tmp_path: Path) -> None:
    client, _ = api_client(resolve_config({"storage": {"data_dir": str(tmp_path)}}))
    song = {"prompt": "p", "callback_url": "https://hooks.example.com/x"}
    answer = client.post("/v1/songs", json=song)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["field"] == "callback_url" and "webhooks.allowed_hosts" in error["message"]

    strict = resolve_config(
        {
            "storage": {"data_dir": str(tmp_path)},
            "webhooks": {"allowed_hosts": ["127.0.0.1"], "signing_secret": SECRET},
        }
    )
    client, _ = api_client(strict)
    inside = client.post("/v1/songs", json={**song, "callback_url": "https://127.0.0.1/x"})
    assert inside.status_code == 422 and "allow_private_addresses" in inside.text


def test_webhooks_without_a_signing_secret_do_not_start() -> None:
    with pytest.raises(ValueError, match="SONGSERVE_WEBHOOKS__SIGNING_SECRET"):
        resolve_config({"webhooks": {"allowed_hosts": ["hooks.example.com"]}})


# -- signatures -----------------------------------------------------------------------------------


def test_signatures_follow_standard_webhooks() -> None:
    # The test vector of the Standard Webhooks specification's reference libraries.
    assert (
        signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    body = b'{"type":"song.succeeded"}'
    now = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": "v0,old " + signature(SECRET, "msg_1", now, body),
    }
    verify(SECRET, headers, body)
    with pytest.raises(ValueError, match="no valid signature"):
        verify(SECRET, headers, body + b" ")
    with pytest.raises(ValueError, match="too old"):
        verify(SECRET, headers, body, now=now + 3600)


# -- delivery -------------------------------------------------------------------------------------


async def _ended_song(
    store: JobStore, url: str, status: str = "succeeded", owner: str = "own_a"
) -> str:
    job, _ = await store.create_job(
        owner=owner,
        request={"prompt": "p", "callback_url": url},
        seed=1,
        variations=1,
        callback_url=url,
    )
    claimed = await store.claim_next("test", lease_s=30, max_attempts=3)
    assert claimed is not None and claimed.id == job.id and claimed.lease_token
    if status == "canceled":
        await store.cancel_job(job.id)
    else:
        await store.update_job(job.id, claimed.lease_token, status=status)
    return job.id


async def _describe(job: Any) -> dict[str, Any]:
    return {"id": job.id, "status": job.status}


def test_deliveries_are_claimed_once_the_song_ended_and_fenced(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        job, _ = await store.create_job(
            owner="o",
            request={"prompt": "p"},
            seed=1,
            variations=1,
            callback_url="https://h.example/x",
        )
        assert await store.claim_webhook(lease_s=60) is None  # the song has not ended
        claimed = await store.claim_next("test", lease_s=30, max_attempts=3)
        assert claimed is not None and claimed.lease_token
        await store.update_job(job.id, claimed.lease_token, status="failed")
        first = await store.claim_webhook(lease_s=0.2)
        assert first is not None and first.attempts == 1 and first.id.startswith("msg_")
        other_replica = backend.new_store()
        assert await other_replica.claim_webhook(lease_s=60) is None  # leased
        await asyncio.sleep(0.4)
        second = await other_replica.claim_webhook(lease_s=60)  # the lease expired
        assert second is not None and second.id == first.id and second.attempts == 2
        assert first.lease_token is not None and second.lease_token is not None
        # The first claim can no longer record anything; the second can.
        assert not await store.finish_webhook(job.id, first.lease_token, status="delivered")
        assert await other_replica.finish_webhook(
            job.id, second.lease_token, status="pending", retry_in_s=0.2, error="503"
        )
        assert await store.claim_webhook(lease_s=60) is None  # not due yet
        await asyncio.sleep(0.3)
        third = await store.claim_webhook(lease_s=60)
        assert third is not None and third.attempts == 3 and third.lease_token
        assert await store.finish_webhook(job.id, third.lease_token, status="delivered")
        record = await store.get_webhook(job.id)
        assert record is not None and record.status == "delivered"
        assert record.delivered_at is not None and record.last_error is None
        assert await store.claim_webhook(lease_s=60) is None
        await store.delete_job(job.id)
        assert await store.get_webhook(job.id) is None  # deleted with its song

    backend.run(scenario)


def test_a_delivery_is_signed_retried_after_a_500_and_shown_on_the_song(tmp_path: Path) -> None:
    config = _config(tmp_path)
    client, services = api_client(config)

    def answer(_: Delivery, earlier: int) -> int:
        return 500 if earlier == 0 else 204

    with running_receiver(answer) as receiver:
        accepted = client.post(
            "/v1/songs", json={"prompt": "a song", "variations": 1, "callback_url": receiver.url}
        )
        assert accepted.status_code == 202, accepted.text
        song_id = accepted.json()["id"]
        assert client.get(f"/v1/songs/{song_id}").json()["webhook"]["status"] == "pending"

        async def finish_and_deliver() -> list[str]:
            jobs = services.jobs
            claimed = await jobs.claim_next("test", lease_s=30, max_attempts=3)
            assert claimed is not None and claimed.lease_token
            await jobs.update_job(song_id, claimed.lease_token, status="succeeded")
            dispatcher = WebhookDispatcher(config.webhooks, jobs, song_describer(config, jobs))
            outcomes = []
            for _ in range(2):
                record = await jobs.claim_webhook(lease_s=5)
                while record is None:  # waiting out the backoff
                    await asyncio.sleep(0.02)
                    record = await jobs.claim_webhook(lease_s=5)
                outcomes.append((await dispatcher.deliver(record)).status)
            return outcomes

        assert asyncio.run(finish_and_deliver()) == ["pending", "delivered"]
    first, second = receiver.deliveries
    assert first.path == second.path == "/hooks/songs"
    assert first.headers["webhook-id"] == second.headers["webhook-id"]  # receivers dedupe on it
    for delivery in (first, second):
        assert delivery.headers["webhook-signature"] == _expected_signature(delivery)
        assert delivery.headers["content-type"] == "application/json"
        assert abs(int(delivery.headers["webhook-timestamp"]) - time.time()) < 60
    payload = second.payload
    assert payload["type"] == "song.succeeded"
    assert payload["data"]["id"] == song_id and payload["data"]["status"] == "succeeded"
    webhook = client.get(f"/v1/songs/{song_id}").json()["webhook"]
    assert webhook["status"] == "delivered" and webhook["attempts"] == 2
    assert webhook["last_status_code"] == 204 and webhook["delivered_at"]


def test_deliveries_give_up_after_max_attempts_and_skip_canceled_songs(tmp_path: Path) -> None:
    config = _config(tmp_path, max_attempts=3)

    with running_receiver(lambda _d, _n: 503) as receiver:

        async def scenario() -> tuple[Any, Any]:
            from serve.store import open_job_store

            store = open_job_store(config.storage)
            failing = await _ended_song(store, receiver.url, "failed")
            canceled = await _ended_song(store, receiver.url, "canceled")
            dispatcher = WebhookDispatcher(config.webhooks, store, _describe)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                await dispatcher.start_due()
                records = [await store.get_webhook(job) for job in (failing, canceled)]
                if all(r is not None and r.status != "pending" for r in records):
                    break
                await asyncio.sleep(0.05)
            return records[0], records[1]

        gave_up, skipped = asyncio.run(scenario())
    assert gave_up.status == "failed" and gave_up.attempts == 3
    assert "503" in gave_up.last_error and "gave up after 3 attempts" in gave_up.last_error
    assert skipped.status == "skipped" and skipped.attempts == 1
    assert len(receiver.deliveries) == 3  # all of the failed song's; none for the canceled one
    assert {d.payload["type"] for d in receiver.deliveries} == {"song.failed"}


_KILLABLE_DISPATCHER = textwrap.dedent(
    """
    import asyncio, sys
    from serve.config import resolve_config
    from serve.store import open_job_store
    from serve.workflow.webhooks import WebhookDispatcher

    async def main():
        config = resolve_config({"storage": {"data_dir": sys.argv[1]}, "webhooks": %r})
        store = open_job_store(config.storage)
        async def describe(job):
            return {"id": job.id, "status": job.status}
        await WebhookDispatcher(config.webhooks, store, describe).run_forever()

    asyncio.run(main())
    """
)


def test_a_delivery_cut_short_by_a_killed_worker_is_made_by_another(tmp_path: Path) -> None:
    """At least once: the worker holding a delivery is SIGKILLed while the receiver has it; its
    lease expires and another worker delivers it, with the same webhook-id."""
    config = _config(tmp_path, lease_s=1.5, timeout_s=1.0)

    def answer(delivery: Delivery, earlier: int) -> int:
        if earlier == 0:
            time.sleep(0.8)  # the first worker dies while waiting for this answer
        return 204

    with running_receiver(answer) as receiver:
        from serve.store import open_job_store

        async def prepare() -> str:
            store = open_job_store(config.storage)
            job_id = await _ended_song(store, receiver.url)
            await store.close()
            return job_id

        song_id = asyncio.run(prepare())
        settings = {**_webhooks(lease_s=1.5, timeout_s=1.0), "signing_secret": SECRET}
        worker = subprocess.Popen(
            [sys.executable, "-c", _KILLABLE_DISPATCHER % settings, str(tmp_path)],
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        try:
            deadline = time.monotonic() + 30
            while not receiver.deliveries:
                assert worker.poll() is None, "the worker exited"
                assert time.monotonic() < deadline, "the worker never delivered"
                time.sleep(0.01)
            worker.send_signal(signal.SIGKILL)  # mid-delivery: the receiver is still answering
            worker.wait(10)
        finally:
            if worker.poll() is None:
                worker.kill()
        killed_at = time.monotonic()

        async def take_over() -> Any:
            store = open_job_store(config.storage)
            dispatcher = WebhookDispatcher(config.webhooks, store, _describe)
            while (record := await store.get_webhook(song_id)) is None or (
                record.status == "pending"
            ):
                assert time.monotonic() - killed_at < 10, record
                await dispatcher.start_due()
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.1)
            return record

        record = asyncio.run(take_over())
    assert record.status == "delivered" and record.attempts == 2
    ids = receiver.by_id()
    assert list(ids) == [record.id] and len(ids[record.id]) == 2  # at least once, same id
    assert all(d.headers["webhook-signature"] == _expected_signature(d) for d in ids[record.id])
