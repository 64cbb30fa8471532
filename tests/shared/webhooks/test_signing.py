"""Signatures verify with an independent Standard Webhooks implementation."""

import json

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.webhooks import signing


def headers(secrets, body, message_id="msg_1", timestamp=None):
    import time

    timestamp = timestamp or int(time.time())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signing.signature_header(
            secrets, message_id=message_id, timestamp=timestamp, body=body
        ),
    }


def test_a_signature_verifies_with_the_reference_library():
    secret = signing.new_secret()
    body = json.dumps({"type": "job.completed", "data": {"id": "x"}}).encode()
    assert secret.startswith("whsec_")
    assert Webhook(secret).verify(body, headers([secret], body))["type"] == "job.completed"


def test_a_tampered_body_or_another_secret_fails():
    secret = signing.new_secret()
    body = b'{"a":1}'
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"a":2}', headers([secret], body))
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers([secret], body))


def test_during_rotation_both_secrets_verify():
    new, old = signing.new_secret(), signing.new_secret()
    body = b'{"a":1}'
    signed = headers([new, old], body)
    assert len(signed["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        Webhook(secret).verify(body, signed)
