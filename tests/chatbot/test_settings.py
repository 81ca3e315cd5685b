from pathlib import Path

import pytest

from chatbot.settings import Settings, SettingsError, load_settings


def test_defaults_work_offline():
    s = load_settings()
    assert s.models.generator == "embedded"
    assert s.models.embedding == "embedded"
    assert s.data_dir == Path("var")
    assert s.generation.temperature == 0.0


def test_every_field_is_documented():
    def walk(model_cls, prefix=""):
        for name, field in model_cls.model_fields.items():
            assert field.description, f"{prefix}{name} has no description"
            sub = field.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                walk(sub, f"{prefix}{name}.")

    walk(Settings)


def test_yaml_then_env_then_overrides(tmp_path, monkeypatch):
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("data_dir: /srv/assistant\ngeneration:\n  max_new_tokens: 100\n  top_k: 7\n")
    s = load_settings(cfg)
    assert s.data_dir == Path("/srv/assistant") and s.generation.max_new_tokens == 100
    monkeypatch.setenv("APP_GENERATION__MAX_NEW_TOKENS", "300")
    s = load_settings(cfg)
    assert s.generation.max_new_tokens == 300  # env beats the file
    assert s.generation.top_k == 7  # the rest of the file's section is kept
    s = load_settings(cfg, generation={"max_new_tokens": 5})
    assert s.generation.max_new_tokens == 5


def test_config_file_from_environment(tmp_path, monkeypatch):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("chat:\n  collection: handbook\n")
    monkeypatch.setenv("APP_CONFIG_FILE", str(cfg))
    assert load_settings().chat.collection == "handbook"


def test_bad_value_names_field_and_variable(monkeypatch):
    monkeypatch.setenv("APP_GENERATION__TEMPERATURE", "hot")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "generation.temperature" in str(err.value)
    assert "APP_GENERATION__TEMPERATURE" in str(err.value)


def test_unknown_key_in_file_is_an_error(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("generation:\n  max_tokens: 10\n")
    with pytest.raises(SettingsError, match=r"generation\.max_tokens"):
        load_settings(cfg)


def test_missing_or_malformed_file(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("generation: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(bad)


def test_errors_never_print_secret_values(tmp_path):
    """A rejected password, API key, or a misspelt secret setting is named, never echoed."""
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "ui:\n  auth: password\n  password: 20250917\n  pasword: hunter2\nmodels:\n  endpoint_api_key: 8812\n"
    )
    with pytest.raises(SettingsError) as err:
        load_settings(cfg)
    message = str(err.value)
    assert "ui.password" in message and "ui.pasword" in message and "models.endpoint_api_key" in message
    for secret in ("20250917", "hunter2", "8812"):
        assert secret not in message
    assert "value not shown" in message
