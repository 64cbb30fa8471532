"""Read what the API published to the real broker (Redis list or the file broker's folder)."""

from __future__ import annotations

import base64
import json
from typing import Any

from shared.config import Settings
from shared.states import Task
from tests import services


def published(settings: Settings, task: Task) -> list[dict[str, Any]]:
    """Return the decoded bodies (args, kwargs, embed) of messages waiting in a task's queue."""
    queue = settings.queue_for(task)
    if settings.is_embedded_broker:
        raw = [
            path.read_text()
            for path in sorted((settings.broker_dir / "queue").glob(f"*.{queue}.msg"))
        ]
    else:
        raw = [entry.decode() for entry in services.redis_client().lrange(queue, 0, -1)]
    bodies = []
    for message in raw:
        envelope = json.loads(message)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        bodies.append({"raw": message, "body": json.loads(body)})
    return bodies
