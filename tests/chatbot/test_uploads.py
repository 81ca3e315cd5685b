"""Confinement of what browser users add: uploads under the data directory only, never replacing a file
without consent, and server-folder syncs only under ui.sync_roots (real files, real folders, real links)."""

from __future__ import annotations

import pytest

from chatbot.ui.sync_jobs import SyncJobs
from chatbot.uploads import (
    FolderNotAllowed,
    UploadError,
    UploadExists,
    allowed_folder,
    allowed_training_path,
    delete_collection,
    save_uploads,
    uploads_dir,
)
from retrieval.collection import Collection


def test_uploads_land_in_the_collections_uploads_folder_only(settings, tmp_path):
    written = save_uploads(settings, "handbook", [("guide.md", b"# Guide"), ("notes.txt", b"n")])
    assert [p.parent for p in written] == [settings.data_dir / "uploads" / "handbook"] * 2
    for name in (
        "../../etc/evil.txt",
        "/tmp/abs.txt",
        "a\\b.txt",
        "..",
        ".",
        ".hidden",
        "x\x00.md",
        "x\n.md",
    ):
        with pytest.raises(UploadError, match="cannot save an upload named"):
            save_uploads(settings, "handbook", [(name, b"x")])
    with pytest.raises(ValueError, match="invalid collection name"):
        save_uploads(settings, "../outside", [("a.txt", b"x")])
    assert sorted(p.name for p in (settings.data_dir / "uploads" / "handbook").iterdir()) == [
        "guide.md",
        "notes.txt",
    ]
    assert not (tmp_path / "etc").exists() and not (tmp_path / "abs.txt").exists()


def test_an_upload_never_replaces_a_file_without_consent(settings):
    save_uploads(settings, "handbook", [("guide.md", b"first")])
    with pytest.raises(UploadExists) as err:
        save_uploads(settings, "handbook", [("new.md", b"new"), ("guide.md", b"second")])
    assert err.value.names == ["guide.md"]
    folder = uploads_dir(settings, "handbook")
    assert (folder / "guide.md").read_bytes() == b"first"
    assert not (folder / "new.md").exists()  # all or nothing
    save_uploads(settings, "handbook", [("new.md", b"new"), ("guide.md", b"second")], replace=True)
    assert (folder / "guide.md").read_bytes() == b"second"
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temporary left over


def test_server_folders_are_synced_only_under_the_configured_roots(settings, tmp_path):
    docs = tmp_path / "docs"
    (docs / "team").mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.mkdir()
    (docs / "escape").symlink_to(secret)
    with pytest.raises(FolderNotAllowed, match="none are set"):  # the default: no server folder at all
        allowed_folder(settings, "handbook", docs)
    assert allowed_folder(settings, "handbook", uploads_dir(settings, "handbook")).name == "handbook"

    settings.ui.sync_roots = [docs]
    assert allowed_folder(settings, "handbook", docs / "team") == (docs / "team").resolve()
    for outside in (secret, docs / "escape", docs / "team" / ".." / ".." / "secret", "/etc", "/"):
        with pytest.raises(FolderNotAllowed):
            allowed_folder(settings, "handbook", outside)
    with pytest.raises(FolderNotAllowed):  # the background sync checks too, whoever calls it
        SyncJobs().start(settings, "handbook", secret)


def test_the_training_page_reads_only_what_the_app_may_already_search(settings, tmp_path):
    """A collection's folder and uploads, the sync roots and the project's data/: yes; any other server path
    (followed through a link, or by ``..``): no."""
    indexed = tmp_path / "handbook"
    indexed.mkdir()
    (indexed / "a.md").write_text("# A\n\nAbout otters.\n")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwords.txt").write_text("hunter2")
    (indexed / "escape").symlink_to(secret)
    for path in (secret, secret / "passwords.txt", indexed, "/etc", "/"):
        with pytest.raises(FolderNotAllowed, match="training page"):
            allowed_training_path(settings, path)
    Collection.open(settings, "handbook").sync(indexed)
    assert allowed_training_path(settings, indexed) == indexed.resolve()
    assert allowed_training_path(settings, uploads_dir(settings, "handbook")).name == "handbook"
    assert allowed_training_path(settings, "data/finetune/chat_examples.jsonl").is_file()
    for outside in (indexed / "escape", indexed / ".." / "secret" / "passwords.txt"):
        with pytest.raises(FolderNotAllowed):
            allowed_training_path(settings, outside)
    settings.ui.sync_roots = [secret]
    assert allowed_training_path(settings, secret / "passwords.txt") == (secret / "passwords.txt").resolve()


def test_deleting_a_collection_deletes_its_uploads(settings):
    """Withdrawn documents stay withdrawn: a collection made again under the name starts empty."""
    save_uploads(settings, "rrhh", [("nominas.txt", b"Nominas de 2024: salarios de todo el personal.")])
    Collection.open(settings, "rrhh").sync(uploads_dir(settings, "rrhh"))
    assert delete_collection(settings, "rrhh") == 1
    assert not Collection.exists(settings, "rrhh") and not uploads_dir(settings, "rrhh").exists()
    save_uploads(settings, "rrhh", [("vacaciones.txt", b"Vacaciones: 23 dias laborables.")])
    report = Collection.open(settings, "rrhh").sync(uploads_dir(settings, "rrhh"))
    assert report.added == ["vacaciones.txt"]
    assert save_uploads(settings, "rrhh", [("nominas.txt", b"otra")])  # the old name is free again


def test_a_name_in_another_unicode_form_is_the_same_upload(settings):
    """ "Política" composed (NFC) and decomposed (NFD, as a browser on macOS may send it) name one file."""
    composed, decomposed = "Pol\u00edtica.txt", "Poli\u0301tica.txt"
    save_uploads(settings, "rrhh", [(composed, b"2023")])
    with pytest.raises(UploadExists):
        save_uploads(settings, "rrhh", [(decomposed, b"2024")])
    save_uploads(settings, "rrhh", [(decomposed, b"2024")], replace=True)
    assert [(p.name, p.read_bytes()) for p in uploads_dir(settings, "rrhh").iterdir()] == [
        (composed, b"2024")
    ]
