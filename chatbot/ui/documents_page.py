"""The documents page: collections, uploads, server-folder syncs with progress, stats and failures."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from chatbot.ui.jobs import save_uploads, sync_jobs
from chatbot.ui.state import PageContext, page_context
from retrieval.collection import Collection


def upload_folder(ctx: PageContext, name: str, stats: dict) -> Path:
    """Where uploads to ``name`` go: the folder the collection is synced from, or its own uploads folder."""
    folder = stats.get("folder")
    return Path(folder) if folder else ctx.settings.data_dir / "uploads" / name


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


def sync_controls(ctx: PageContext, name: str, stats: dict) -> None:
    t, jobs = ctx.t, sync_jobs()
    running = (job := jobs.get(name)) is not None and job.running
    uploads = st.file_uploader(t("upload"), accept_multiple_files=True, key=f"up-{name}")
    if st.button(t("upload_and_sync"), disabled=running or not uploads):
        target = upload_folder(ctx, name, stats)
        save_uploads(target, [(f.name, f.getvalue()) for f in uploads])
        jobs.start(ctx.settings, name, target)
        st.rerun()
    with st.form(f"folder-{name}"):
        st.caption(t("server_folder"))
        folder = st.text_input(t("folder_path"), value=stats.get("folder") or "")
        submitted = st.form_submit_button(t("sync"), disabled=running)
    if submitted and folder:
        path = Path(folder).expanduser()
        if not path.is_dir():
            st.error(f"{path}: not a folder on the server")
        else:
            jobs.start(ctx.settings, name, path)


@st.fragment(run_every=1.0)
def sync_progress(ctx: PageContext, name: str) -> None:
    t = ctx.t
    job = sync_jobs().get(name)
    if job is None:
        return
    if job.running:
        fraction = job.done / job.total if job.total else 0.0
        st.progress(fraction, text=f"{t('syncing')} {job.done}/{job.total or '?'} {job.current}")
        return
    if job.error:
        st.error(job.error)
    elif job.report is not None:
        r = job.report
        st.success(
            f"{t('sync_done')}: {len(r.added)} {t('added')}, {len(r.updated)} {t('updated')}, "
            f"{len(r.deleted)} {t('deleted')}, {len(r.unchanged)} {t('unchanged')}, {len(r.failed)} {t('failed')}"
        )
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
        if st.button(t("confirm_delete"), key=f"del-{name}", type="primary"):
            Collection.delete(ctx.settings, name)
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
        sync_controls(ctx, name, stats)
        sync_progress(ctx, name)
        delete_panel(ctx, name)
    create_form(ctx)


main()
