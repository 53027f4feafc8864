"""The versioned dataset writer, on the local folder and on a real S3 server (SeaweedFS on loopback)."""

from __future__ import annotations

import threading
import uuid

import pandas as pd
import pytest

from spotline.storage.datasets import DatasetCorrupt, Datasets
from spotline.storage.layout import Layout
from spotline.storage.local import LocalObjectStore
from tests.storage.test_storage import PrefixedStore


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalObjectStore(tmp_path / "store")
    return PrefixedStore(request.getfixturevalue("s3_store"), f"d-{uuid.uuid4().hex[:10]}/")


def frames(n_parts: int, rows: int, tag: str) -> list[pd.DataFrame]:
    return [pd.DataFrame({"i": range(p * rows, (p + 1) * rows), "tag": tag}) for p in range(n_parts)]


def test_a_published_version_reads_back_whole_with_its_manifest(store):
    ds = Datasets(store, Layout())
    m = ds.publish("personas", "2026-11-30", frames(3, 10, "a"), producer="test", code="abc123")
    assert ds.latest("personas").version == "2026-11-30"
    back = ds.read("personas")
    assert list(back["i"]) == list(range(30)) and set(back["tag"]) == {"a"}
    assert m.rows == 30 and len(m.parts) == 3 and m.code_version == "abc123" and m.producer == "test"
    keys = [o.key for o in store.list("_spotline/datasets/personas/")]
    assert "_spotline/datasets/personas/latest.json" in keys
    assert sum(k.startswith("_spotline/datasets/personas/version=2026-11-30/part-") for k in keys) == 3


def test_rerunning_a_version_replaces_it_and_leaves_no_stale_parts(store):
    ds = Datasets(store, Layout())
    first = ds.publish("suite", "v1", frames(3, 5, "old"), producer="test")
    second = ds.publish("suite", "v1", frames(2, 5, "new"), producer="test")
    assert set(ds.read("suite")["tag"]) == {"new"} and len(ds.read("suite")) == 10
    parts = [o.key for o in store.list("_spotline/datasets/suite/version=v1/part-")]
    assert sorted(parts) == sorted(p.key for p in second.parts)
    assert first.write_id != second.write_id and first.content_hash != second.content_hash


def test_same_data_gives_the_same_content_hash(store):
    ds = Datasets(store, Layout())
    a = ds.publish("h", "1", frames(2, 4, "x"), producer="test")
    b = ds.publish("h", "2", frames(2, 4, "x"), producer="test")
    assert a.content_hash == b.content_hash


def test_latest_moves_forward_only_and_old_versions_stay_readable(store):
    ds = Datasets(store, Layout())
    ds.publish("nightly", "2026-11-30", frames(1, 3, "30th"), producer="test")
    ds.publish("nightly", "2026-12-01", frames(1, 3, "1st"), producer="test")
    ds.publish("nightly", "2026-11-29", frames(1, 3, "backfill"), producer="test")  # a backfill
    assert ds.latest("nightly").version == "2026-12-01"
    assert set(ds.read("nightly")["tag"]) == {"1st"}
    assert set(ds.read("nightly", "2026-11-29")["tag"]) == {"backfill"}
    assert ds.versions("nightly") == ["2026-11-29", "2026-11-30", "2026-12-01"]


def test_a_reader_never_sees_a_version_whose_manifest_is_not_written(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    ds = Datasets(store, Layout())
    ds.publish("d", "1", frames(1, 2, "one"), producer="test")
    original_put = store.put

    def crash_on_manifest(key, data, content_type=None):
        if key.endswith("manifest.json") and "/version=2/" in key:
            raise OSError("the writer died here")
        original_put(key, data, content_type)

    store.put = crash_on_manifest
    with pytest.raises(OSError):
        ds.publish("d", "2", frames(4, 2, "half"), producer="test")
    assert ds.latest("d").version == "1" and set(ds.read("d")["tag"]) == {"one"}
    assert "2" not in ds.versions("d")


def test_a_tampered_part_is_refused_not_read(store):
    ds = Datasets(store, Layout())
    m = ds.publish("t", "1", frames(2, 3, "x"), producer="test")
    store.put(m.parts[1].key, b"not the bytes the manifest names")
    with pytest.raises(DatasetCorrupt, match="does not match its hash"):
        ds.read("t")


def test_concurrent_publishers_both_land_and_latest_names_the_newest(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    ds = Datasets(store, Layout())
    errors = []

    def publish(version):
        try:
            ds.publish("race", version, frames(1, 2, version), producer="test")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(f"v{i:02d}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert ds.latest("race").version == "v07" and len(ds.versions("race")) == 8


def test_names_and_versions_cannot_escape_the_dataset_folder(tmp_path):
    ds = Datasets(LocalObjectStore(tmp_path / "store"), Layout())
    for name, version in [("../x", "1"), ("a/b", "1"), ("ok", "../../etc"), ("ok", "")]:
        with pytest.raises(ValueError):
            ds.publish(name, version, frames(1, 1, "x"), producer="test")
