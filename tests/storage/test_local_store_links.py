"""Symlinks and special files in the local object store and in `upload_folder`: real files, links
and FIFOs in tmp_path. A link leaving the folder is reported, never followed; a FIFO is reported,
never opened (the tests carry a timeout in case it were)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spotline.storage import ObjectNotFound, UnsafeObject
from spotline.storage.local import LocalObjectStore
from spotline.storage.upload import upload_folder

SECRET = b"root:x:0:0:not-for-the-index\n"


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder next to the store root, with a file nobody should be able to read through it."""
    folder = tmp_path / "outside"
    (folder / "deeper").mkdir(parents=True)
    (folder / "passwd").write_bytes(SECRET)
    (folder / "deeper" / "key.pem").write_bytes(SECRET)
    return folder


@pytest.fixture
def store(tmp_path) -> LocalObjectStore:
    s = LocalObjectStore(tmp_path / "store")
    s.put("corpus/ok.md", b"# fine")
    return s


def entries(store, prefix=""):
    return {o.key: o for o in store.list(prefix)}


def test_a_symlink_to_a_file_outside_the_root_is_listed_as_unsafe_and_never_read(store, outside):
    (store.root / "corpus" / "passwd.md").symlink_to(outside / "passwd")
    info = entries(store, "corpus/")["corpus/passwd.md"]
    assert info.set_aside_reason == "unsafe-link"
    assert info.set_aside_detail == "symlink to a path outside the store root"
    assert info.size == 0 and info.version.startswith("link-")
    assert str(outside) not in info.model_dump_json()  # the target path is never disclosed
    assert store.head("corpus/passwd.md") == info  # head and list agree (same version)
    assert [o.version for o in store.list("corpus/")] == [o.version for o in store.list("corpus/")]  # stable
    with pytest.raises(UnsafeObject) as err:
        store.get("corpus/passwd.md")
    assert err.value.reason == "unsafe-link" and str(outside) not in str(err.value)
    assert SECRET not in repr(err.value).encode()
    # The listing still has the ordinary document, with its normal version.
    assert entries(store)["corpus/ok.md"].set_aside_reason is None


def test_a_relative_symlink_that_climbs_out_of_the_root_is_unsafe_too(store, outside):
    (store.root / "corpus" / "up.md").symlink_to(Path("..", "..", "outside", "passwd"))
    assert entries(store)["corpus/up.md"].set_aside_reason == "unsafe-link"
    with pytest.raises(UnsafeObject):
        store.get("corpus/up.md")


def test_a_symlink_to_a_folder_outside_is_one_unsafe_entry_and_its_contents_are_not_listed(store, outside):
    (store.root / "corpus" / "etc").symlink_to(outside, target_is_directory=True)
    listed = entries(store)
    assert sorted(listed) == ["corpus/etc", "corpus/ok.md"]
    assert listed["corpus/etc"].set_aside_reason == "unsafe-link" and listed["corpus/etc"].size == 0
    assert list(store.list("corpus/etc/")) == []  # a prefix through the link lists nothing either
    for key in ["corpus/etc/passwd", "corpus/etc/deeper/key.pem"]:
        with pytest.raises(UnsafeObject):
            store.get(key)
        info = store.head(key)
        assert info.set_aside_reason == "unsafe-link" and info.size == 0
        assert "corpus/etc" in info.set_aside_detail and str(outside) not in info.set_aside_detail


def test_symlinks_inside_the_root_to_a_file_and_to_a_folder_are_followed(store):
    store.put("shared/faq.md", b"# FAQ")
    store.put("shared/sub/deep.md", b"# deep")
    (store.root / "corpus" / "faq-link.md").symlink_to(store.root / "shared" / "faq.md")
    (store.root / "corpus" / "shared").symlink_to(Path("..", "shared"), target_is_directory=True)
    listed = entries(store, "corpus/")
    assert sorted(listed) == ["corpus/faq-link.md", "corpus/ok.md", "corpus/shared/faq.md", "corpus/shared/sub/deep.md"]
    assert all(o.set_aside_reason is None for o in listed.values())
    assert listed["corpus/faq-link.md"].size == len(b"# FAQ")
    assert store.get("corpus/faq-link.md") == b"# FAQ"
    assert store.get("corpus/shared/sub/deep.md") == b"# deep"
    assert store.head("corpus/shared/faq.md") == listed["corpus/shared/faq.md"]
    # The same keys whichever prefix the listing starts from.
    assert [o.key for o in store.list("corpus/shared/")] == ["corpus/shared/faq.md", "corpus/shared/sub/deep.md"]
    assert {k for k in entries(store) if k.startswith("corpus/")} == set(listed)


@pytest.mark.timeout(20)
def test_a_folder_link_cycle_terminates(store):
    store.put("a/b/doc.md", b"x")
    (store.root / "a" / "b" / "up").symlink_to(Path(".."), target_is_directory=True)  # to an ancestor
    (store.root / "a" / "self").symlink_to(Path("."), target_is_directory=True)  # to itself
    (store.root / "a" / "b" / "root").symlink_to(store.root, target_is_directory=True)  # to the root
    assert [o.key for o in store.list("")] == ["a/b/doc.md", "corpus/ok.md"]
    # Starting below the cycle gives the same keys under it.
    assert [o.key for o in store.list("a/")] == ["a/b/doc.md"]
    # Reading through the loop by an explicit key is fine: it never leaves the root.
    assert store.get("a/b/up/b/doc.md") == b"x"


def test_link_loops_and_dangling_links_are_missing_objects_unless_they_point_outside(store, tmp_path):
    corpus = store.root / "corpus"
    (corpus / "loop-a.md").symlink_to("loop-b.md")
    (corpus / "loop-b.md").symlink_to("loop-a.md")
    (corpus / "gone.md").symlink_to("never-written.md")
    (corpus / "gone-outside.md").symlink_to(tmp_path / "not-there-yet")
    listed = entries(store)
    assert sorted(listed) == ["corpus/gone-outside.md", "corpus/ok.md"]
    assert listed["corpus/gone-outside.md"].set_aside_reason == "unsafe-link"
    for key in ["corpus/loop-a.md", "corpus/gone.md"]:
        assert store.head(key) is None
        with pytest.raises(ObjectNotFound):
            store.get(key)
    # Creating the outside target later does not make the link readable.
    (tmp_path / "not-there-yet").write_bytes(SECRET)
    with pytest.raises(UnsafeObject):
        store.get("corpus/gone-outside.md")


@pytest.mark.timeout(20)
def test_a_fifo_is_listed_as_not_a_file_and_listing_does_not_hang(store):
    os.mkfifo(store.root / "corpus" / "pipe.md")
    (store.root / "corpus" / "pipe-link.md").symlink_to("pipe.md")
    listed = entries(store)
    for key in ["corpus/pipe.md", "corpus/pipe-link.md"]:
        assert listed[key].set_aside_reason == "not-a-file", key
        assert listed[key].set_aside_detail == "a named pipe (FIFO), not a regular file"
        assert listed[key].size == 0
        assert store.head(key) == listed[key]
        with pytest.raises(UnsafeObject) as err:
            store.get(key)  # would block forever if the FIFO were opened for reading
        assert err.value.reason == "not-a-file"


def test_put_through_a_parent_folder_symlinked_outside_the_root_is_refused(store, outside):
    (store.root / "corpus" / "elsewhere").symlink_to(outside, target_is_directory=True)
    before = sorted(p.name for p in outside.iterdir())
    for key in ["corpus/elsewhere/new.md", "corpus/elsewhere/passwd", "corpus/elsewhere/made/up/deep.md"]:
        with pytest.raises(UnsafeObject) as err:
            store.put(key, b"overwritten")
        assert err.value.reason == "unsafe-link"
    assert sorted(p.name for p in outside.iterdir()) == before  # nothing created, no temp file left
    assert (outside / "passwd").read_bytes() == SECRET
    # delete refuses the same way rather than removing the file behind the link
    with pytest.raises(UnsafeObject):
        store.delete("corpus/elsewhere/passwd")
    assert (outside / "passwd").read_bytes() == SECRET


def test_put_and_delete_on_a_key_that_is_itself_a_link_replace_or_remove_the_link_only(store, outside):
    link = store.root / "corpus" / "passwd.md"
    link.symlink_to(outside / "passwd")
    store.put("corpus/passwd.md", b"# now a real document")
    assert not link.is_symlink() and store.get("corpus/passwd.md") == b"# now a real document"
    assert (outside / "passwd").read_bytes() == SECRET
    link.unlink()
    link.symlink_to(outside / "passwd")
    store.delete("corpus/passwd.md")
    assert not os.path.lexists(link) and (outside / "passwd").read_bytes() == SECRET


def test_writes_through_a_folder_link_inside_the_root_still_work(store):
    (store.root / "alias").symlink_to(store.root / "corpus", target_is_directory=True)
    store.put("alias/new/doc.md", b"via the alias")
    assert store.get("corpus/new/doc.md") == b"via the alias"
    store.delete("alias/new/doc.md")
    assert store.head("corpus/new/doc.md") is None


def test_a_store_key_naming_the_root_itself_is_invalid(store):
    for bad in [".", "./"]:
        with pytest.raises(ValueError):
            store.put(bad, b"x")


# ---------------------------------------------------------------- upload_folder


class MemoryStore:
    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def put(self, key, data, content_type=None):
        self.objects[key] = data

    def holds(self, key, data):
        return self.objects.get(key) == data


@pytest.fixture
def source(tmp_path, outside) -> Path:
    src = tmp_path / "src"
    (src / "guides" / "deep").mkdir(parents=True)
    (src / "guides" / "a.md").write_bytes(b"# a")
    (src / "guides" / "deep" / "b.md").write_bytes(b"# b")
    (src / ".hidden.md").write_bytes(b"# hidden files were uploaded before too")
    (src / "alias.md").symlink_to(Path("guides", "a.md"))  # inside: followed
    (src / "guides-again").symlink_to("guides", target_is_directory=True)  # inside folder: followed
    (src / "guides" / "deep" / "loop").symlink_to(Path(".."), target_is_directory=True)  # cycle
    (src / "passwd.md").symlink_to(outside / "passwd")  # outside file
    (src / "etc").symlink_to(outside, target_is_directory=True)  # outside folder
    (src / "dangling.md").symlink_to("nowhere.md")
    os.mkfifo(src / "pipe.md")
    return src


@pytest.mark.timeout(20)
def test_upload_folder_follows_links_inside_the_source_and_skips_links_outside_and_fifos(source):
    store = MemoryStore()
    report = upload_folder(store, source, "corpus/help/")
    assert report.uploaded == [
        "corpus/help/.hidden.md",
        "corpus/help/alias.md",
        "corpus/help/guides/a.md",
        "corpus/help/guides/deep/b.md",
        "corpus/help/guides-again/a.md",
        "corpus/help/guides-again/deep/b.md",
    ]
    assert store.objects["corpus/help/alias.md"] == b"# a"
    assert SECRET not in store.objects.values()
    assert dict(report.skipped) == {
        "dangling.md": "dangling symlink (its target does not exist)",
        "etc": "symlink outside the source folder",
        "guides/deep/loop": "symlink to a folder it is itself inside (a loop)",
        "guides-again/deep/loop": "symlink to a folder it is itself inside (a loop)",
        "passwd.md": "symlink outside the source folder",
        "pipe.md": "not a regular file",
    }


def test_upload_folder_into_the_local_store_never_writes_outside_bytes(source, tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    report = upload_folder(store, source, "corpus")  # no trailing slash: same keys
    assert "corpus/guides/a.md" in report.uploaded
    assert all(store.get(o.key) != SECRET for o in store.list("corpus/"))


def test_upload_folder_skips_an_unreadable_file_instead_of_failing(source, monkeypatch):
    from spotline.storage.local import ConfinedFolder

    real_read = ConfinedFolder.read

    def read(self, parts):
        # Root ignores file modes (these tests may run as root), so the denial is simulated here.
        if parts == ("guides", "a.md"):
            raise PermissionError(13, "Permission denied")
        return real_read(self, parts)

    monkeypatch.setattr(ConfinedFolder, "read", read)
    report = upload_folder(MemoryStore(), source, "corpus")
    assert ("guides/a.md", "unreadable: permission denied") in report.skipped
    assert "corpus/guides/deep/b.md" in report.uploaded


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_upload_folder_skips_a_file_without_read_permission(source):
    (source / "guides" / "a.md").chmod(0)
    report = upload_folder(MemoryStore(), source, "corpus")
    assert ("guides/a.md", "unreadable: permission denied") in report.skipped


def test_upload_folder_refuses_a_source_that_is_not_a_folder(tmp_path):
    (tmp_path / "file.md").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        upload_folder(MemoryStore(), tmp_path / "file.md", "corpus/")


def test_a_link_swapped_between_the_check_and_the_read_still_reads_the_checked_file(store, outside, monkeypatch):
    import spotline.storage.local as local

    (store.root / "corpus" / "doc.md").symlink_to("ok.md")
    real_reopen = local._reopen

    def swap_then_reopen(fd, flags):
        link = store.root / "corpus" / "doc.md"
        link.unlink()
        link.symlink_to(outside / "passwd")  # the attacker's move, after every check passed
        return real_reopen(fd, flags)

    monkeypatch.setattr(local, "_reopen", swap_then_reopen)
    assert store.get("corpus/doc.md") == b"# fine"  # the file that was checked, not the new target


def test_without_proc_the_store_fails_loudly_instead_of_looking_empty(store, monkeypatch):
    import spotline.storage.local as local

    real_readlink = os.readlink

    def readlink(path, *args, **kwargs):
        if str(path).startswith("/proc/self/fd/"):
            raise FileNotFoundError(2, "No such file or directory", path)
        return real_readlink(path, *args, **kwargs)

    monkeypatch.setattr(local.os, "readlink", readlink)
    # An empty listing would make a full sync delete every document from the index.
    with pytest.raises(local.ProcUnavailable):
        list(store.list(""))
    with pytest.raises(local.ProcUnavailable):
        store.get("corpus/ok.md")
