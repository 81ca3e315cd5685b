"""The chat page. Run with `make run` (or `streamlit run streamlit_app.py`).

Pages only: every answer comes from chatbot.service.ChatService, built once per process in st.cache_resource.
"""

from __future__ import annotations

import streamlit as st

from chatbot.service import ChatService
from chatbot.settings import load_settings
from chatbot.ui.render import plain_passage, safe_markdown

st.set_page_config(page_title="Domain Assistant", page_icon="💬")


@st.cache_resource(show_spinner="Loading the models…")
def get_service() -> ChatService:
    service = ChatService(load_settings())
    _ = service.llm  # load the generator now rather than on the first question
    return service


def show_sources(sources: list) -> None:
    if not sources:
        return
    with st.expander(f"Sources ({len(sources)})"):
        for s in sources:
            star = " ★" if s.get("cited") else ""
            st.markdown(f"**[{s['number']}] {s['label']}**{star} — relevance {s['score']:.2f}")
            st.text(plain_passage(s["text"]))


service = get_service()
collections = service.collections()

with st.sidebar:
    st.header("Domain Assistant")
    default = service.settings.chat.collection
    if collections:
        index = collections.index(default) if default in collections else 0
        collection = st.selectbox("Collection", collections, index=index)
    else:
        collection = None
        st.warning("No collection yet. Index a folder with `chatbot index NAME FOLDER`.")
    if st.button("New conversation", use_container_width=True):
        st.session_state.pop("conversation_id", None)
        st.session_state.messages = []

if "messages" not in st.session_state:
    st.session_state.messages = []  # [{"role", "content", "sources"}], this browser session only

for message in st.session_state.messages:
    with st.chat_message(message["role"]):
        st.markdown(safe_markdown(message["content"]))
        show_sources(message.get("sources", []))

if question := st.chat_input("Ask a question about the documents", disabled=collection is None):
    st.session_state.messages.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(safe_markdown(question))
    with st.chat_message("assistant"):
        placeholder = st.empty()
        shown, answer = "", None
        for event in service.stream(
            question, conversation_id=st.session_state.get("conversation_id"), collection=collection
        ):
            if event.kind == "token":
                shown += event.text
                # The whole text is re-sanitised each time: an image marker may arrive split over tokens.
                placeholder.markdown(safe_markdown(shown) + "▌")
            elif event.kind == "done":
                answer = event.answer
        placeholder.markdown(safe_markdown(answer.text))
        st.session_state.conversation_id = answer.conversation_id
        sources = [s.__dict__ for s in answer.sources]
        show_sources(sources)
    st.session_state.messages.append({"role": "assistant", "content": answer.text, "sources": sources})
