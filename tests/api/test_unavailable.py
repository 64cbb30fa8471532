import subprocess
import sys

from fastapi.testclient import TestClient

from api.app import create_app
from shared.config import Settings

# A loopback port nothing listens on: the database is "down" without leaving this machine.
DOWN = "postgresql+psycopg://postgres@127.0.0.1:9/textq"


def test_database_down_is_503_with_retry_after_never_500(tmp_path):
    settings = Settings(data_dir=tmp_path, database_url=DOWN)
    with TestClient(create_app(settings)) as client:
        submitted = client.post(
            "/v1/jobs",
            json={"task": "sentiment", "input": {"text": "a"}},
            headers={"X-API-Key": "tq_0123456789ab_checked-against-the-database"},
        )
        assert submitted.status_code == 503
        assert submitted.headers["retry-after"]
        assert submitted.headers["content-type"] == "application/problem+json"
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("unavailable")


def test_importing_the_api_loads_no_model_library():
    code = "import sys, api.app; print('torch' in sys.modules or 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
