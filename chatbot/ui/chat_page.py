"""The chat page: streamed answers with their sources, conversations, model and generation choices, feedback."""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from chatbot.citations import quote_context
from chatbot.memory import ConversationNotFound
from chatbot.settings import GenerationSettings, SettingsError, generation_with
from chatbot.ui.render import code_span, passage_markdown, quote_markdown, safe_markdown
from chatbot.ui.state import LEGACY_PARAM, PageContext, legacy_key, page_context

log = logging.getLogger(__name__)


def legacy_conversations(ctx: PageContext) -> None:
    """A link of an earlier version (``?s=KEY``) names conversations: offer to move them into this browser.
    Never adopted silently, as that version did: a link someone sent would file what you ask under their key."""
    key = legacy_key()
    if key is None or f"browser:{key}" == ctx.owner:
        return
    store = ctx.service.conversations
    held = store.list(owner=f"browser:{key}")
    if not held:
        st.query_params.pop(LEGACY_PARAM, None)
        return
    st.sidebar.info(ctx.t("legacy_link").format(n=len(held)))
    if st.sidebar.button(ctx.t("legacy_move"), key="legacy_move"):
        store.move_owner(f"browser:{key}", ctx.owner)
        st.query_params.pop(LEGACY_PARAM, None)
        st.rerun()


def sidebar_conversations(ctx: PageContext) -> None:
    t, store = ctx.t, ctx.service.conversations
    legacy_conversations(ctx)
    st.sidebar.subheader(t("conversations"))
    if st.sidebar.button(t("new_conversation"), use_container_width=True, key="new_conversation"):
        st.session_state.pop("conversation_id", None)
    current = st.session_state.get("conversation_id")
    listed = store.list(owner=ctx.owner)
    if not listed:
        st.sidebar.caption(t("no_conversations"))
    for conv in listed[:50]:
        label = ("▸ " if conv.id == current else "") + safe_markdown(conv.title)  # labels render Markdown
        if st.sidebar.button(label, key=f"conv-{conv.id}", use_container_width=True):
            st.session_state.conversation_id = conv.id
            st.rerun()
    if current and any(c.id == current for c in listed):
        with st.sidebar.expander(t("rename") + " / " + t("delete")):
            title = st.text_input(
                t("title"), value=store.get(current, ctx.owner).title, key=f"title-{current}"
            )
            left, right = st.columns(2)
            if left.button(t("rename"), key="rename"):
                try:
                    store.rename(current, title, owner=ctx.owner)
                except ValueError:  # an empty title
                    st.sidebar.error(t("title_empty"))
                else:
                    st.rerun()
            if right.button(t("delete"), key="delete"):
                store.delete(current, owner=ctx.owner)
                st.session_state.pop("conversation_id", None)
                st.rerun()


def sidebar_choices(ctx: PageContext) -> tuple[str | None, str | None, GenerationSettings | None]:
    t, settings = ctx.t, ctx.settings
    collections = ctx.service.collections()
    collection = None
    if collections:
        default = settings.chat.collection
        collection = st.sidebar.selectbox(
            t("collection"), collections, index=collections.index(default) if default in collections else 0
        )
    versions = ["current", "base", *_version_ids(ctx)]
    labels = {"current": t("version_current"), "base": t("version_base")}
    version = st.sidebar.selectbox(t("model_version"), versions, format_func=lambda v: labels.get(v, v))
    g = settings.generation
    beams = ctx.service.llm_for(None if version == "current" else version).beam_search()
    with st.sidebar.expander(t("generation")):
        values = {
            "temperature": st.slider("temperature", 0.0, 2.0, g.temperature, 0.05),
            "top_p": st.slider("top_p", 0.05, 1.0, g.top_p, 0.05),
            "top_k": st.number_input("top_k", 0, 500, g.top_k),
            "max_new_tokens": st.number_input("max_new_tokens", 1, 4096, g.max_new_tokens),
            "repetition_penalty": st.slider("repetition_penalty", 1.0, 2.0, g.repetition_penalty, 0.05),
            "num_beams": st.number_input(
                "num_beams",
                1,
                8,
                g.num_beams,
                disabled=not beams,
                help=None if beams else t("beams_help"),
            ),
            "extractive": st.checkbox("extractive", g.extractive, help=t("extractive_help")),
            "drafts": st.number_input("drafts", 1, 8, g.drafts, help=t("drafts_help")),
        }
    try:
        generation = generation_with(g, values)
    except SettingsError as exc:
        st.sidebar.error(str(exc))
        generation = None
    return collection, (None if version == "current" else version), generation


def _version_ids(ctx: PageContext) -> list[str]:
    from finetune.registry import Registry

    return [v.id for v in Registry(ctx.settings).list()]


def show_sources(ctx: PageContext, sources: list[dict[str, Any]]) -> None:
    if not sources:
        return
    t = ctx.t
    with st.expander(f"{t('sources')} ({len(sources)})"):
        for s in sources:
            page = f", {t('page')} {s['page']}" if s.get("page") else ""
            heading = f" — {s['title']}" if s.get("title") else ""
            cited = f" · {t('cited')}" if s.get("cited") else ""
            # file names and headings come from the documents: shown as text, never as Markdown
            st.markdown(
                f"**[{s['number']}]** {code_span(s['source'])}{page}{safe_markdown(heading)} · "
                f"{t('relevance')} {s['score']:.2f}{cited}"
            )
            st.markdown(passage_markdown(s["text"], s.get("quote")))  # the quote in bold, the rest as text


def show_quotes(sources: list[dict[str, Any]]) -> None:
    """Under an answer, each cited source's words that it quotes, in bold in their paragraph: what the answer
    rests on, readable without opening the sources. Stored answers from before quotes were located have none."""
    for s in sources:
        if s.get("cited") and s.get("quote"):
            before, quote, after = quote_context(s["text"], s["quote"])
            st.caption(f"[{s['number']}] {code_span(s['source'])}: {quote_markdown(before, quote, after)}")


def feedback(ctx: PageContext, message_id: int) -> None:
    t = ctx.t
    with st.popover(t("feedback_prompt")):
        rating = st.feedback("thumbs", key=f"thumbs-{message_id}")
        correction = st.text_area(t("correction"), key=f"fix-{message_id}")
        if st.button(t("save_feedback"), key=f"save-{message_id}"):
            score = {1: 1, 0: -1}.get(rating, 0)
            ctx.service.conversations.add_feedback(message_id, score, correction or None)
            st.success(t("feedback_saved"))


def history(ctx: PageContext) -> None:
    conv_id = st.session_state.get("conversation_id")
    if not conv_id:
        return
    try:
        messages = ctx.service.conversations.messages(conv_id, owner=ctx.owner)
    except ConversationNotFound:
        st.session_state.pop("conversation_id", None)
        return
    for m in messages:
        with st.chat_message(m.role):
            st.markdown(safe_markdown(m.content))
            if m.role == "assistant":
                if m.unsure:
                    st.caption(ctx.t("unsure"))
                show_quotes(m.sources)
                show_sources(ctx, m.sources)
                feedback(ctx, m.id)


def answer(
    ctx: PageContext, question: str, collection: str, version: str | None, gen: GenerationSettings
) -> None:
    with st.chat_message("user"):
        st.markdown(safe_markdown(question))
    with st.chat_message("assistant"):
        placeholder = st.empty()
        shown = ""
        try:
            with st.spinner(ctx.t("loading_model")):
                ctx.service.llm_for(version)  # loads on first use; later questions find it loaded
            events = ctx.service.stream(
                question,
                conversation_id=st.session_state.get("conversation_id"),
                collection=collection,
                generation=gen,
                model_version=version,
                owner=ctx.owner,
                language=ctx.language,
            )
            try:
                for event in events:
                    if event.kind == "token":
                        shown += event.text
                        # re-sanitised as a whole: an image marker may arrive split over several tokens
                        placeholder.markdown(safe_markdown(shown) + "▌")
                    elif event.kind == "done":
                        placeholder.markdown(safe_markdown(event.answer.text))
                        st.session_state.conversation_id = event.answer.conversation_id
            finally:
                # A closed tab, a new question or Stop ends this script run at the next st call (Streamlit's
                # StopException, not an Exception): closing here stops the model and frees it at once.
                events.close()
        except Exception as exc:  # shown to the user, who is not a programmer; logged in full
            log.exception("answering %r failed", question)
            st.error(f"{ctx.t('error')}: {exc}")
            return
    st.rerun()  # redraw from the stored conversation, with sources and feedback under the new answer


def main() -> None:
    ctx = page_context()
    sidebar_conversations(ctx)
    collection, version, gen = sidebar_choices(ctx)
    if collection is None:
        st.info(ctx.t("no_collection"))
    history(ctx)
    question = st.chat_input(ctx.t("ask_placeholder"), disabled=collection is None or gen is None)
    if question and collection and gen:
        answer(ctx, question, collection, version, gen)


main()
