"""The API process after start-up: long-lived imports frozen out of the garbage collector."""

import gc

from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


def test_startup_freezes_the_import_time_heap(tmp_path):
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 's.db'}", start_runner=False))
    try:
        with TestClient(app) as client:
            # torch, Ray, SQLAlchemy and FastAPI are all loaded: a full collection would walk them
            assert gc.get_freeze_count() > 100_000
            assert client.get("/healthz").status_code == 200
    finally:
        gc.unfreeze()
