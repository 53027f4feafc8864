"""One S3 bucket on the session's SeaweedFS for every storage test."""

from __future__ import annotations

import pytest

from spotline.settings import StoreSettings
from spotline.storage.s3 import S3ObjectStore


@pytest.fixture(scope="session")
def s3_store(s3_server):
    settings = StoreSettings(
        kind="s3", endpoint_url=s3_server, bucket="storage-tests",
        access_key_id="spotline-test-key", secret_access_key="spotline-test-secret-value",
    )
    s = S3ObjectStore(settings)
    s.ensure_bucket()
    return s
