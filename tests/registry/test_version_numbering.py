"""Versions number 1, 2, 3… per model with no gap or duplicate, even when
twenty uploads arrive at once (real PostgreSQL, committed transactions)."""

import io
import shutil
import threading
import zipfile

from django.db import connection

from registry.models import ModelVersion
from tests.conftest import RegisteredModelFactory, UserFactory, api_client_for


def _distinct_skops(source, target, n: int):
    # Same model, distinct bytes: a zip comment changes the digest, not the model.
    shutil.copyfile(source, target)
    with zipfile.ZipFile(target, "a") as archive:
        archive.comment = f"copy {n}".encode()
    return target.read_bytes()


def test_twenty_concurrent_uploads_get_versions_1_to_20(committed_db, demo_models, tmp_path):
    from governance import roles

    engineer = UserFactory(username="erin", role=roles.ENGINEER)
    RegisteredModelFactory(name="busy-model", created_by=engineer)
    payloads = [_distinct_skops(demo_models["sklearn_skops"], tmp_path / f"m{n}.skops", n) for n in range(20)]
    statuses: list[int] = []
    barrier = threading.Barrier(20)

    def upload(data: bytes):
        try:
            client = api_client_for(engineer)
            handle = io.BytesIO(data)
            handle.name = "m.skops"
            barrier.wait()
            response = client.post(
                "/api/v1/models/busy-model/versions/", {"artifact": handle, "flavor": "sklearn"}, format="multipart"
            )
            statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=upload, args=(data,)) for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [201] * 20
    numbers = sorted(ModelVersion.objects.filter(model__name="busy-model").values_list("number", flat=True))
    assert numbers == list(range(1, 21))
