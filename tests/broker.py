"""Read what the API published to the real broker (Redis list or the file broker's folder)."""

from __future__ import annotations

import base64
import json
from typing import Any

from shared.config import Settings
from shared.states import Task
from tests import services


def published(settings: Settings, task: Task) -> list[dict[str, Any]]:
    """Return the decoded bodies (args, kwargs, embed) of messages waiting in a task's queues:
    its own and each of its models' (`<prefix>.<task>.<name>`)."""
    queue = settings.queue_for(task)
    if settings.is_embedded_broker:
        folder = settings.broker_dir / "queue"
        paths = [*folder.glob(f"*.{queue}.msg"), *folder.glob(f"*.{queue}.*.msg")]
        # A message file is named `<id>.<queue>.msg`.
        raw = [
            (path.name.split(".", 1)[1].removesuffix(".msg"), path.read_text())
            for path in sorted(paths)
        ]
    else:
        client = services.redis_client()
        names = [queue, *(key.decode() for key in client.scan_iter(match=f"{queue}.*"))]
        raw = [
            (name, entry.decode())
            for name in names
            if client.type(name) == b"list"
            for entry in client.lrange(name, 0, -1)
        ]
    bodies = []
    for queue_name, message in raw:
        envelope = json.loads(message)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        bodies.append({"queue": queue_name, "raw": message, "body": json.loads(body)})
    return bodies
