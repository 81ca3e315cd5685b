"""The training page: start a retrain or a training run in the background, follow its loss and log, compare
model versions, promote and roll back."""

from __future__ import annotations

import streamlit as st

from chatbot.ui.render import code_span
from chatbot.ui.state import PageContext, page_context
from chatbot.ui.training_jobs import current_job, latest_metrics, start_job, stop_job
from chatbot.uploads import FolderNotAllowed, allowed_training_path
from finetune.registry import Registry, RegistryError


def start_controls(ctx: PageContext) -> None:
    t = ctx.t
    job = current_job(ctx.settings)
    running = job is not None and job.alive()
    left, right = st.columns(2)
    if left.button(t("start_retrain"), disabled=running, type="primary"):
        start_job(ctx.settings, ["retrain"])
        st.rerun()
    with right.popover(t("start_training"), disabled=running):
        docs = st.text_input(t("data") + " (--docs)", value="data/sample")
        chat = st.text_input("--chat", value="data/finetune/chat_examples.jsonl")
        steps = st.number_input("--max-steps", 1, 100_000, 50)
        if st.button(t("start_training"), key="train-go"):
            args = ["train", "--max-steps", str(steps)]
            try:
                args += ["--docs", str(allowed_training_path(ctx.settings, docs))] if docs else []
                args += ["--chat", str(allowed_training_path(ctx.settings, chat))] if chat else []
            except (FolderNotAllowed, OSError, ValueError) as exc:  # ValueError: a NUL in the path
                st.error(str(exc))
                return
            start_job(ctx.settings, args)
            st.rerun()


@st.fragment(run_every=2.0)
def live(ctx: PageContext) -> None:
    t = ctx.t
    job = current_job(ctx.settings)
    if job is not None and job.alive():
        st.info(f"{t('training_running')}: {code_span(' '.join(job.command[2:]))} (pid {job.pid})")
        if st.button(t("stop")):
            stop_job(job)
    else:
        st.caption(t("training_idle"))
    records = latest_metrics(ctx.settings)  # the latest run, started here or from the command line
    losses = [{"step": r["step"], "loss": r["loss"]} for r in records if "loss" in r]
    if losses:
        st.caption(t("loss_curve"))
        st.line_chart(losses, x="step", y="loss")
    if job is not None:
        with st.expander(t("log"), expanded=job.alive()):
            st.code(job.log_tail() or "…", language=None)


def versions(ctx: PageContext) -> None:
    t = ctx.t
    registry = Registry(ctx.settings)
    st.subheader(t("versions"))
    listed = registry.list()
    if not listed:
        st.caption(t("no_versions"))
        return
    current = registry.current_id()
    rows = []
    for v in listed:
        numbers = {k: round(val, 4) for k, val in v.metrics.items() if isinstance(val, int | float)}
        rows.append(
            {"version": v.id, "current": v.id == current, "kind": v.kind, "created": v.created_at, **numbers}
        )
    st.dataframe(rows, hide_index=True)
    left, right = st.columns(2)
    chosen = left.selectbox(t("promote"), [v.id for v in listed], label_visibility="collapsed")
    if left.button(t("promote")):
        registry.promote(chosen)
        st.rerun()
    if right.button(t("rollback"), disabled=current is None):
        try:
            registry.rollback()
        except RegistryError as exc:
            st.error(str(exc))
        st.rerun()


def main() -> None:
    ctx = page_context()
    st.title(ctx.t("page_training"))
    start_controls(ctx)
    live(ctx)
    versions(ctx)


main()
