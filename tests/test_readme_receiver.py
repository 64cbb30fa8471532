"""The README's webhook receiver example really accepts textq's signatures and refuses others.

tests/test_readme.py runs it against a live server; this checks its verdicts one by one.
"""

import io
import re
import time
from pathlib import Path

from shared.webhooks import signing

README = Path(__file__).parents[1] / "README.md"


def receiver_block():
    return re.search(
        r"<!-- receiver-example:start -->\n```python\n(.*?)```", README.read_text(), re.S
    ).group(1)


def receiver_class(secret, monkeypatch):
    # As pasted: the secret comes from the environment, set from GET /v1/webhooks/secret.
    monkeypatch.setenv("WEBHOOK_SECRET", secret)
    namespace = {"__name__": "readme_example"}
    exec(compile(receiver_block(), "README receiver example", "exec"), namespace)
    return namespace["Receiver"]


def post(handler_class, body, headers):
    handler = handler_class.__new__(handler_class)
    handler.rfile = io.BytesIO(body)
    handler.headers = {"content-length": str(len(body)), **headers}
    sent = []
    handler.send_response = sent.append
    handler.end_headers = lambda: None
    handler.do_POST()
    return sent[0]


def signed(secret, body, timestamp):
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signing.signature_header(
            [secret], message_id="msg_1", timestamp=timestamp, body=body
        ),
    }


def test_the_readme_receiver_accepts_a_signed_delivery_and_refuses_forgeries(monkeypatch):
    secret = signing.new_secret()
    receiver = receiver_class(secret, monkeypatch)
    body = b'{"type":"job.completed","data":{"id":"j1"}}'
    now = int(time.time())
    assert post(receiver, body, signed(secret, body, now)) == 204
    assert post(receiver, body, signed(signing.new_secret(), body, now)) == 401
    assert post(receiver, body.replace(b"j1", b"j2"), signed(secret, body, now)) == 401
    assert post(receiver, body, signed(secret, body, now - 3600)) == 401


def test_the_readme_receiver_listens_on_loopback_only():
    # A receiver tried on a laptop must not answer the whole network.
    assert re.search(r'HTTPServer\(\("127\.0\.0\.1", \d+\)', receiver_block())
