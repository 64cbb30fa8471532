"""The README's webhook receiver example really accepts textq's signatures and refuses others."""

import base64
import io
import re
import time
from pathlib import Path

from shared import signing

README = Path(__file__).parents[2] / "README.md"


def receiver_class(secret):
    block = re.search(
        r"<!-- receiver-example:start -->\n```python\n(.*?)```", README.read_text(), re.S
    ).group(1)
    secret_bytes = base64.b64decode(secret.removeprefix("whsec_"))
    code = re.sub(r"SECRET = .*\n", lambda _: f"SECRET = {secret_bytes!r}\n", block)
    namespace = {"__name__": "readme_example"}
    exec(compile(code, "README receiver example", "exec"), namespace)
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


def test_the_readme_receiver_accepts_a_signed_delivery_and_refuses_forgeries():
    secret = signing.new_secret()
    receiver = receiver_class(secret)
    body = b'{"type":"job.completed","data":{"id":"j1"}}'
    now = int(time.time())
    assert post(receiver, body, signed(secret, body, now)) == 204
    assert post(receiver, body, signed(signing.new_secret(), body, now)) == 401
    assert post(receiver, body.replace(b"j1", b"j2"), signed(secret, body, now)) == 401
    assert post(receiver, body, signed(secret, body, now - 3600)) == 401
