"""Settings problems end in one SettingsError that names the file or variable and what it must look like."""

import logging

import pytest

from chatbot.settings import SettingsError, load_settings


def _refused(monkeypatch, name: str, value: str) -> str:
    """The settings error that ``name=value`` in the environment gives."""
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    return str(err.value)


def test_a_list_variable_that_is_not_json_says_a_json_list_is_expected(monkeypatch):
    message = _refused(monkeypatch, "APP_UI__SYNC_ROOTS", "/tmp")
    assert "APP_UI__SYNC_ROOTS" in message and "ui.sync_roots" in message
    assert "JSON list" in message and '["' in message  # what it must look like, with an example


def test_a_section_variable_that_is_not_json_says_a_json_object_is_expected(monkeypatch):
    message = _refused(monkeypatch, "APP_RETRIEVAL", "{bad")
    assert "APP_RETRIEVAL" in message and "JSON object" in message
    assert "APP_RETRIEVAL__CHUNK_TOKENS" in message  # the one-field-at-a-time alternative


def test_a_bad_section_variable_never_echoes_its_value(monkeypatch):
    message = _refused(monkeypatch, "APP_MODELS", '{"endpoint_api_key": "sk-very-secret"')
    assert "APP_MODELS" in message and "sk-very-secret" not in message


def test_a_settings_file_that_is_not_utf8_is_named(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_bytes("chat:\n  collection: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SettingsError) as err:
        load_settings(cfg)
    assert str(cfg) in str(err.value) and "UTF-8" in str(err.value)


def test_a_settings_file_that_is_a_folder_is_named(tmp_path):
    with pytest.raises(SettingsError, match="is a folder"):
        load_settings(tmp_path)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("APP_RETREIVAL__CHUNK_TOKENS", "APP_RETRIEVAL__CHUNK_TOKENS"),
        ("APP_UI_LANGUAGE", "APP_UI__LANGUAGE"),  # one underscore where two belong
        ("APP_GENERATIONS__TOP_K", "APP_GENERATION__TOP_K"),
    ],
)
def test_a_misspelt_variable_is_refused_naming_the_closest_setting(monkeypatch, name, suggestion):
    message = _refused(monkeypatch, name, "100")
    assert name in message and suggestion in message
    assert "100" not in message  # a misspelt secret is named, never shown


def test_an_unrelated_app_variable_is_ignored_with_a_warning(monkeypatch, caplog):
    # other programs' variables (a container's): the assistant still starts, and names the likely typo
    for name in ("APP_ENV", "APP_MODE", "APP_UID", "APP_MODELS_DIR", "APP_DATADIR"):
        monkeypatch.setenv(name, "production")
    with caplog.at_level(logging.WARNING, logger="chatbot.settings"):
        settings = load_settings()
    assert settings.chat.collection == "sample"
    assert all(f"{name} matches no setting and is ignored" in caplog.text for name in ("APP_ENV", "APP_MODE"))
    assert "APP_DATADIR matches no setting and is ignored (did you mean APP_DATA_DIR?" in caplog.text


def test_the_config_file_variable_and_every_real_setting_are_accepted(monkeypatch, tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("chat:\n  collection: handbook\n", encoding="utf-8")
    monkeypatch.setenv("APP_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("APP_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("APP_UI__SYNC_ROOTS", f'["{tmp_path}"]')
    settings = load_settings()
    assert settings.chat.collection == "handbook" and settings.ui.sync_roots == [tmp_path]


def test_an_overlap_as_long_as_the_chunk_is_refused_naming_both_values(monkeypatch):
    message = _refused(monkeypatch, "APP_RETRIEVAL__CHUNK_OVERLAP", "5000")
    assert "chunk_overlap" in message and "5000" in message
    assert "chunk_tokens" in message and "256" in message
    assert load_settings(retrieval={"chunk_tokens": 64, "chunk_overlap": 63}).retrieval.chunk_overlap == 63
