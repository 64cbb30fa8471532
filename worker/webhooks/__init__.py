"""The webhooks process: a dispatcher of due events and a Celery pool delivering them, signed."""
