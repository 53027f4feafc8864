"""Object store contract, run against the local folder and a real S3 server (SeaweedFS on loopback)."""

from __future__ import annotations

import uuid

import pytest

from spotline.settings import StoreSettings
from spotline.storage import ObjectNotFound
from spotline.storage.local import LocalObjectStore
from spotline.storage.s3 import S3ObjectStore


class PrefixedStore:
    """One S3 bucket for the session (each bucket is a SeaweedFS collection with its own volumes);
    every test gets a fresh key prefix inside it, so tests stay independent."""

    def __init__(self, inner: S3ObjectStore, prefix: str):
        self.inner, self.prefix = inner, prefix

    def _strip(self, info):
        return info.model_copy(update={"key": info.key[len(self.prefix):]}) if info else None

    def list(self, prefix=""):
        return [self._strip(o) for o in self.inner.list(self.prefix + prefix)]

    def head(self, key):
        return self._strip(self.inner.head(self.prefix + key))

    def get(self, key):
        return self.inner.get(self.prefix + key)

    def put(self, key, data, content_type=None):
        self.inner.put(self.prefix + key, data, content_type)

    def delete(self, key):
        self.inner.delete(self.prefix + key)

    def uri(self, key):
        return self.inner.uri(self.prefix + key)


@pytest.fixture(scope="session")
def s3_store(s3_server):
    settings = StoreSettings(
        kind="s3", endpoint_url=s3_server, bucket="storage-tests",
        access_key_id="spotline-test-key", secret_access_key="spotline-test-secret-value",
    )
    s = S3ObjectStore(settings)
    s.ensure_bucket()
    return s


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalObjectStore(tmp_path / "store")
    return PrefixedStore(request.getfixturevalue("s3_store"), f"t-{uuid.uuid4().hex[:10]}/")


def test_put_get_head_delete_roundtrip(store):
    assert store.head("docs/a.md") is None
    store.put("docs/a.md", b"hello")
    assert store.get("docs/a.md") == b"hello"
    info = store.head("docs/a.md")
    assert info.key == "docs/a.md" and info.size == 5 and info.version
    store.delete("docs/a.md")
    assert store.head("docs/a.md") is None
    with pytest.raises(ObjectNotFound):
        store.get("docs/a.md")
    store.delete("docs/a.md")  # deleting a missing key is not an error


def test_list_is_prefix_scoped_and_sorted(store):
    for key in ["corpus/b.md", "corpus/a.md", "corpus/sub/c.txt", "corpusx/d.md", "other/e.md"]:
        store.put(key, key.encode())
    assert [o.key for o in store.list("corpus/")] == ["corpus/a.md", "corpus/b.md", "corpus/sub/c.txt"]
    assert [o.key for o in store.list("corpus")] == ["corpus/a.md", "corpus/b.md", "corpus/sub/c.txt", "corpusx/d.md"]
    assert [o.key for o in store.list("nothing/")] == []
    assert all(o.uri.endswith(o.key) for o in store.list(""))


def test_version_changes_when_content_changes(store):
    store.put("v/doc.md", b"one")
    v1 = store.head("v/doc.md").version
    store.put("v/doc.md", b"two, longer")
    v2 = store.head("v/doc.md").version
    assert v1 != v2
    assert [o.version for o in store.list("v/")] == [v2]


def test_uri_names_the_backend(store):
    uri = store.uri("x/y.md")
    assert uri.startswith("s3://" if isinstance(store, PrefixedStore) else "file://") and uri.endswith("/x/y.md")


def test_local_store_rejects_path_traversal(tmp_path):
    store = LocalObjectStore(tmp_path / "root")
    for bad in ["../escape.md", "a/../../b", "/etc/passwd", ""]:
        with pytest.raises(ValueError):
            store.put(bad, b"x")
    assert not (tmp_path / "escape.md").exists()


def test_local_put_is_atomic_and_leaves_no_temp_files(tmp_path):
    store = LocalObjectStore(tmp_path / "root")
    store.put("a/b.bin", b"x" * 1000)
    store.put("a/b.bin", b"y" * 10)
    assert store.get("a/b.bin") == b"y" * 10
    assert [p.name for p in (tmp_path / "root" / "a").iterdir()] == ["b.bin"]


def test_s3_secret_never_in_errors(s3_server):
    settings = StoreSettings(kind="s3", endpoint_url=s3_server, bucket="missing-bucket-x",
                             access_key_id="spotline-test-key", secret_access_key="wrong-secret-shh-123",
                             max_attempts=1)
    store = S3ObjectStore(settings)
    with pytest.raises(Exception) as err:
        store.put("a.md", b"x")
    assert "wrong-secret-shh-123" not in str(err.value) and "wrong-secret-shh-123" not in repr(err.value)
    assert "wrong-secret-shh-123" not in repr(settings)
