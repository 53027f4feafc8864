"""Object store contract, run against the local folder and a real S3 server (SeaweedFS on loopback)."""

from __future__ import annotations

import uuid

import pytest

from spotline.settings import StoreSettings
from spotline.storage import ObjectNotFound
from spotline.storage.base import VersionConflict
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

    def holds(self, key, data):
        return self.inner.holds(self.prefix + key, data)

    def put_if(self, key, data, expected_version, content_type=None):
        return self.inner.put_if(self.prefix + key, data, expected_version, content_type)

    def put_file(self, key, path, content_type=None):
        self.inner.put_file(self.prefix + key, path, content_type)

    def get_file(self, key, path):
        self.inner.get_file(self.prefix + key, path)

    def delete(self, key):
        self.inner.delete(self.prefix + key)

    def uri(self, key):
        return self.inner.uri(self.prefix + key)


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


def test_an_upload_of_identical_bytes_writes_nothing_and_keeps_every_version(store, tmp_path):
    from spotline.storage.upload import upload_folder

    src = tmp_path / "src"
    (src / "guides").mkdir(parents=True)
    (src / "guides" / "a.md").write_bytes(b"# a\nalpha")
    (src / "b.md").write_bytes(b"# b\nbeta")
    first = upload_folder(store, src, "corpus/")
    assert sorted(first.uploaded) == ["corpus/b.md", "corpus/guides/a.md"] and first.unchanged == []
    versions = {o.key: o.version for o in store.list("corpus/")}

    again = upload_folder(store, src, "corpus/")
    assert again.uploaded == [] and sorted(again.unchanged) == sorted(versions)
    assert {o.key: o.version for o in store.list("corpus/")} == versions, "a version changed without a write"

    (src / "b.md").write_bytes(b"# b\nBETA")  # same size, other bytes: must be written
    edited = upload_folder(store, src, "corpus/")
    assert edited.uploaded == ["corpus/b.md"] and edited.unchanged == ["corpus/guides/a.md"]
    assert store.get("corpus/b.md") == b"# b\nBETA"
    assert store.head("corpus/b.md").version != versions["corpus/b.md"]
    assert store.head("corpus/guides/a.md").version == versions["corpus/guides/a.md"]


def test_holds_is_false_for_a_missing_object_or_other_bytes(store):
    assert not store.holds("nothing/here.md", b"x")
    store.put("docs/a.md", b"hello")
    assert store.holds("docs/a.md", b"hello")
    assert not store.holds("docs/a.md", b"hellO") and not store.holds("docs/a.md", b"hello!")


def test_s3_holds_recognises_identical_bytes_another_tool_wrote(s3_store):
    key = f"t-{uuid.uuid4().hex[:10]}/console.md"  # no sha256 metadata: the single-part ETag (MD5) decides
    s3_store.client.put_object(Bucket=s3_store.bucket, Key=key, Body=b"uploaded from the console")
    assert s3_store.holds(key, b"uploaded from the console")
    assert not s3_store.holds(key, b"uploaded from the consolE")


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


def test_conditional_write_creates_once_and_replaces_only_the_version_it_read(store):
    v1 = store.put_if("ptr/latest.json", b'{"v": 1}', None)
    with pytest.raises(VersionConflict):  # "create" when something is already there
        store.put_if("ptr/latest.json", b'{"v": "other"}', None)
    v2 = store.put_if("ptr/latest.json", b'{"v": 2}', v1)
    assert v2 != v1 and store.head("ptr/latest.json").version == v2
    with pytest.raises(VersionConflict):  # a writer that read v1 lost the race to v2
        store.put_if("ptr/latest.json", b'{"v": "stale"}', v1)
    assert store.get("ptr/latest.json") == b'{"v": 2}'


def test_conditional_writes_of_the_same_size_still_change_the_version(tmp_path):
    store = LocalObjectStore(tmp_path / "root")
    versions = [store.put_if("p.json", b"same", None)]
    for _ in range(20):  # same bytes, same size, within one mtime tick on coarse file systems
        versions.append(store.put_if("p.json", b"same", versions[-1]))
    assert len(set(versions)) == len(versions)


def test_files_stream_in_and_out_whole(store, tmp_path):
    src = tmp_path / "checkpoint.bin"
    src.write_bytes(bytes(range(256)) * 40_000)  # 10 MB
    store.put_file("ckpt/step-1.bin", src)
    assert store.head("ckpt/step-1.bin").size == src.stat().st_size
    out = tmp_path / "restored.bin"
    store.get_file("ckpt/step-1.bin", out)
    assert out.read_bytes() == src.read_bytes()
    with pytest.raises(ObjectNotFound):
        store.get_file("ckpt/missing.bin", tmp_path / "missing.bin")
    assert not (tmp_path / "missing.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "store") == ["checkpoint.bin", "restored.bin"]  # no temp files


def test_large_files_go_to_s3_in_parts(s3_store, tmp_path, monkeypatch):
    from boto3.s3.transfer import TransferConfig

    import spotline.storage.s3 as s3mod

    # 5 MiB is S3's smallest part: a 12 MiB file becomes three parts without writing 130 MB here.
    monkeypatch.setattr(s3mod, "TRANSFER", TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20))
    src = tmp_path / "model.safetensors"
    src.write_bytes(b"\x01" * (12 * 2**20))
    key = f"t-{uuid.uuid4().hex[:10]}/models/adapter.safetensors"
    s3_store.put_file(key, src)
    assert s3_store.head(key).version.endswith("-3")  # a multipart ETag names its part count
    out = tmp_path / "back.bin"
    s3_store.get_file(key, out)
    assert out.read_bytes() == src.read_bytes()
