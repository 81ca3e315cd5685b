"""The documents page: collections, uploads, server-folder syncs with progress, stats and failures.

Uploads are written under the data directory only; server folders may be synced only under ui.sync_roots
(chatbot/uploads.py).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from chatbot.ui.render import code_span
from chatbot.ui.state import PageContext, page_context
from chatbot.ui.sync_jobs import sync_jobs
from chatbot.uploads import (
    FolderNotAllowed,
    UploadError,
    UploadExists,
    allowed_folder,
    delete_collection,
    save_uploads,
    uploads_dir,
)
from retrieval.collection import Collection
from retrieval.errors import CollectionLockedError


def fed_by_uploads(ctx: PageContext, name: str, stats: dict) -> bool:
    """Whether ``name`` takes uploads: never synced yet, or synced from its own uploads folder."""
    folder = stats.get("folder")
    return not folder or Path(folder).resolve() == uploads_dir(ctx.settings, name).resolve()


def create_form(ctx: PageContext) -> None:
    t = ctx.t
    with st.form("create-collection", clear_on_submit=True):
        st.subheader(t("create_collection"))
        name = st.text_input(t("name"))
        submitted = st.form_submit_button(t("create"))
    if submitted and name:  # outside the form: st.rerun() must not run inside a form's context
        try:
            Collection.open(ctx.settings, name)
        except ValueError as exc:
            st.error(str(exc))
        else:
            st.session_state.collection = name
            st.rerun()


def upload_controls(ctx: PageContext, name: str, stats: dict, running: bool) -> None:
    t = ctx.t
    if not fed_by_uploads(ctx, name, stats):
        st.caption(t("synced_from_folder").format(folder=code_span(str(stats["folder"]))))
        return
    # (no `type=` filter: Streamlit's check of it raises on a hostile file name before ours can refuse it
    # clearly; files of other types are named after the sync instead)
    uploads = st.file_uploader(t("upload"), accept_multiple_files=True, key=f"up-{name}")
    replace = st.checkbox(t("replace_existing"), key=f"replace-{name}")
    if st.button(t("upload_and_sync"), disabled=running or not uploads):
        try:
            save_uploads(ctx.settings, name, [(f.name, f.getvalue()) for f in uploads], replace=replace)
        except UploadExists as exc:
            st.warning(t("upload_exists").format(names=", ".join(exc.names)))
            return
        except UploadError as exc:
            st.error(str(exc))
            return
        sync_jobs().start(ctx.settings, name, uploads_dir(ctx.settings, name))
        st.rerun()


def folder_controls(ctx: PageContext, name: str, stats: dict, running: bool) -> None:
    t = ctx.t
    if not ctx.settings.ui.sync_roots:
        st.caption(t("folder_sync_off"))
        return
    with st.form(f"folder-{name}"):
        st.caption(t("server_folder"))
        folder = st.text_input(t("folder_path"), value=stats.get("folder") or "")
        replace = st.checkbox(t("allow_replace"), key=f"mass-delete-{name}")
        submitted = st.form_submit_button(t("sync"), disabled=running)
    if submitted and folder:
        path = Path(folder).expanduser()
        try:
            # the roots first: outside them, whether a path exists is none of the page's business
            if not allowed_folder(ctx.settings, name, path).is_dir():
                st.error(f"{path}: not a folder on the server")
            else:
                sync_jobs().start(ctx.settings, name, path, allow_mass_delete=replace)
        except (FolderNotAllowed, OSError, ValueError) as exc:  # ValueError: a NUL in the path
            st.error(str(exc))


@st.fragment(run_every=1.0)
def sync_progress(ctx: PageContext, name: str) -> None:
    t = ctx.t
    job = sync_jobs().get(name)
    if job is None:
        return
    if job.running:
        fraction = job.done / job.total if job.total else 0.0
        current = code_span(job.current) if job.current else ""
        st.progress(fraction, text=f"{t('syncing')} {job.done}/{job.total or '?'} {current}")
        return
    if job.error:
        st.error(job.error)
    elif job.report is not None:
        r = job.report
        st.success(
            f"{t('sync_done')}: {len(r.added)} {t('added')}, {len(r.updated)} {t('updated')}, "
            f"{len(r.deleted)} {t('deleted')}, {len(r.unchanged)} {t('unchanged')}, {len(r.failed)} {t('failed')}"
        )
        if r.unsupported:
            names = ", ".join(code_span(p) for p in r.unsupported[:20])
            more = f" (+{len(r.unsupported) - 20})" if len(r.unsupported) > 20 else ""
            st.warning(t("unsupported_files").format(names=names + more))
        if r.failed:
            st.dataframe([{"file": p, "reason": why} for p, why in r.failed.items()], hide_index=True)


def stats_panel(ctx: PageContext, stats: dict) -> None:
    t = ctx.t
    a, b, c = st.columns(3)
    a.metric(t("files"), stats["files"])
    b.metric(t("chunks"), stats["chunks"])
    c.metric(t("last_sync"), (stats.get("last_sync") or "—")[:16].replace("T", " "))
    if stats.get("failures"):
        st.caption(t("failures"))
        st.dataframe([{"file": p, "reason": why} for p, why in stats["failures"].items()], hide_index=True)


def delete_panel(ctx: PageContext, name: str) -> None:
    t = ctx.t
    with st.expander(t("delete_collection")):
        st.caption(t("delete_collection_help"))
        if st.button(t("confirm_delete"), key=f"del-{name}", type="primary"):
            try:
                delete_collection(ctx.settings, name)
            except CollectionLockedError:
                st.error(t("delete_while_syncing"))
                return
            st.session_state.pop("collection", None)
            st.rerun()


def main() -> None:
    ctx = page_context()
    st.title(ctx.t("page_documents"))
    names = Collection.list(ctx.settings)
    chosen = st.session_state.get("collection")
    if names:
        index = names.index(chosen) if chosen in names else 0
        name = st.selectbox(ctx.t("collections"), names, index=index)
        st.session_state.collection = name
        stats = Collection.open(ctx.settings, name).stats()  # read once per rerun: it opens the snapshot
        stats_panel(ctx, stats)
        running = (job := sync_jobs().get(name)) is not None and job.running
        upload_controls(ctx, name, stats, running)
        folder_controls(ctx, name, stats, running)
        sync_progress(ctx, name)
        delete_panel(ctx, name)
    create_form(ctx)


main()
