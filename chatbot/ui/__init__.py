"""Helpers for the Streamlit pages: rendering and session state. No model, index or training code."""
