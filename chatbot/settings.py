"""The one typed settings object, read from a YAML file plus ``APP_``-prefixed environment variables.

Precedence (highest first): keyword overrides, environment variables, the YAML file, the defaults below.
Nested fields use ``__`` in environment variables: ``APP_MODELS__GENERATOR=HuggingFaceTB/SmolLM2-360M-Instruct``.

Settings are built by the entry points (CLI, Streamlit app, tests) with :func:`load_settings` and passed down
explicitly; nothing reads them at import time.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic_settings
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from finetune.config import FinetuneSettings, ModelSettings
from retrieval.config import RetrievalSettings
from retrieval.errors import SettingsError

log = logging.getLogger(__name__)

ENV_PREFIX = "APP_"
CONFIG_ENV_VAR = "APP_CONFIG_FILE"


class GenerationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Answers are short by default (the prompt and the shipped model answer in a phrase and a citation); the
    # cap only stops an answer that runs on. 128 tokens are ~90 English words.
    max_new_tokens: int = Field(128, ge=1, le=8192, description="Most tokens generated for one answer.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 means greedy decoding (deterministic).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (sampling only).")
    top_k: int = Field(50, ge=0, description="Sample among the k most likely tokens; 0 disables.")
    # transformers' repetition penalty also penalises every token of the prompt, i.e. the very words a grounded
    # answer copies from its sources; loops are stopped by no_repeat_ngram_size instead (docs/benchmarks.md).
    repetition_penalty: float = Field(
        1.0, ge=1.0, le=2.0, description="Penalty on tokens already in the prompt or answer; 1 = none."
    )
    # Measured on held-out squad-es with the shipped adapter (docs/model-card.md): 0 declined 25% of answerable
    # questions (F1 0.28); -1.5 declined 11% (F1 0.30); -3 declined 3% but only 25% of unanswerable ones.
    abstain_bias: float = Field(
        -1.5,
        ge=-20.0,
        le=20.0,
        description="Added to the logit of the abstention sentence's first token at the answer's first "
        "position (local backend): below 0 the model declines only when it is surer. Greedy decoding favours "
        "the one fixed sentence over the many ways an answer can start; see docs/model-card.md.",
    )
    no_repeat_ngram_size: int = Field(
        4,
        ge=0,
        le=64,
        description="The answer never repeats a run of this many tokens of its own (the prompt is not "
        "counted, so quoting a source stays possible); 0 disables.",
    )
    extractive: bool = Field(
        True,
        description="The answer quotes a source word for word and cites one that holds the quote (local "
        "backend): the model chooses among the continuations that stay inside a source. See "
        "docs/model-card.md.",
    )
    drafts: int = Field(
        3,
        ge=1,
        le=8,
        description="With extractive and greedy decoding (local backend): answers drafted from the model's "
        "best different first words, of which the one kept has the best log-probability plus "
        "support_weight times the share of the question's words found around its quote. 1 = one greedy "
        "answer, streamed as it is written; more hold the answer until all drafts are done. See "
        "docs/model-card.md.",
    )
    support_weight: float = Field(
        3.0,
        ge=0.0,
        le=20.0,
        description="Weight of a draft's support (the share of the question's words found around its quote in "
        "the source it cites) against its log-probability; 0 = the model's own score only.",
    )
    num_beams: int = Field(1, ge=1, le=8, description="Beam search width; 1 = no beam search.")


def generation_with(
    base: GenerationSettings, overrides: dict[str, Any], names: Mapping[str, str] | None = None
) -> GenerationSettings:
    """``base`` with per-request ``overrides`` (None values ignored), validated: bad values raise
    :class:`SettingsError` naming the parameter, as the caller called it where ``names`` maps a field to
    another name (the API's ``max_tokens`` sets ``max_new_tokens``)."""
    values = {**base.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return GenerationSettings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_parameter(e['loc'], names or {})}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()
        )
        raise SettingsError(f"invalid generation parameters: {problems}") from exc


def _parameter(loc: tuple[Any, ...], names: Mapping[str, str]) -> str:
    field = ".".join(str(p) for p in loc)
    return f"{names[field]} (generation.{field})" if field in names else field


class ChatSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str = Field("sample", description="Collection searched when a request names none.")
    top_k: int = Field(
        3,
        ge=1,
        le=50,
        description="Passages retrieved for each question (fewer if the "
        "context window cannot hold them all).",
    )
    # Two signals decide whether the collection speaks of the question at all (calibrated on the training half
    # of the question sets with benchmarks/abstention_calibration.py, see docs/benchmarks.md): the best
    # passage's cosine similarity (all-MiniLM-L6-v2 is English: it rates unrelated Spanish text ~0.4, so alone
    # it turns away few off-domain Spanish questions, and at the former 0.30 it turned away 16% of answerable
    # English questions about the docs, at 0.20 9% of those about a product manual, whose paraphrases score
    # 0.14-0.20), and the share of the question's words the passages contain.
    min_relevance: float = Field(
        0.15,
        description="The assistant abstains when the best passage's cosine similarity to the question is "
        "below this (calibrated for the embedded embedding model, see docs/benchmarks.md).",
    )
    min_word_coverage: float = Field(
        0.34,
        ge=0.0,
        le=1.0,
        description="The assistant also abstains when the retrieved passages hold less than this share of the "
        "question's content words, unless the best passage reaches chat.sure_relevance; 0 turns this check off.",
    )
    sure_relevance: float = Field(
        0.60,
        description="Cosine similarity at which the best passage is trusted whatever words it shares with "
        "the question (a paraphrase, another inflection).",
    )
    # Chosen on the training halves with benchmarks/grounded_qa.py and unsure_threshold.py (docs/model-card.md,
    # "Answers marked unsure"): 8% of the right answers marked there, 16% on the held-out halves.
    unsure_hesitation: float = Field(
        -0.5,
        ge=-50.0,
        le=50.0,
        description="An answer is marked unsure (the UI and the API say the documents may not hold the answer) "
        "when the model's hesitation at its first token (the abstention sentence's logit minus the best other "
        "token's; it declines above -generation.abstain_bias) is above this. 50 never marks one. Local "
        "backends only: a remote endpoint reports no logits.",
    )
    same_language_first: bool = Field(
        True,
        description="Of the passages that score at least half the best one, those in the question's language "
        "(English or Spanish, when it can be told) are shown first: on a collection holding a page and its "
        "translation, a question is answered from the page in its own language.",
    )
    condense: Literal["concat", "llm", "off"] = Field(
        "concat",
        description="How a follow-up becomes a standalone search query: 'concat' prepends the previous "
        "question, 'llm' asks the model to rewrite it, 'off' searches the follow-up as it is.",
    )
    history_messages: int = Field(
        8, ge=0, description="Most past messages offered to the prompt (fewer if they do not fit)."
    )
    system_prompt: str | None = Field(
        None, description="Replaces the built-in system prompt (which asks to answer only from the sources)."
    )
    # A 5 MB question once took 133 s and 1.5 GB before the prompt budget refused it; 4,000 characters is
    # ~1,000 tokens, more than a question needs and well inside every supported model's window.
    max_question_chars: int = Field(
        4000, ge=1, description="Longest question accepted, in characters; a longer one is refused at once."
    )
    answer_timeout: float = Field(
        300.0,
        gt=0,
        description="Seconds one answer may take from the question to its last token; a slower one is stopped "
        "(the model is freed) and reported as an error.",
    )


class UiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    language: Literal["auto", "en", "es"] = Field(
        "auto", description="Interface language; 'auto' follows the browser (English when it is neither)."
    )
    auth: Literal["none", "password", "oidc"] = Field(
        "none",
        description="Login for the app: 'none' (local use), 'password' (ui.password), or 'oidc' (Streamlit's "
        "st.login with the [auth] section of .streamlit/secrets.toml).",
    )
    password: SecretStr | None = Field(None, description="The shared password when ui.auth = 'password'.")
    oidc_provider: str | None = Field(
        None, description="Provider name under [auth.<name>] in secrets.toml; None uses the [auth] section."
    )
    login_max_failures: int = Field(
        5, ge=1, description="Wrong passwords from one address before its logins are refused for a while."
    )
    login_lockout: float = Field(
        300.0, gt=0, description="Seconds the login stays refused after login_max_failures wrong passwords."
    )
    allow_open_network: bool = Field(
        False,
        description="Let the app run on a network address with ui.auth = 'none' (anyone who can reach it "
        "uses it, no login; a warning is shown). Off: such an app shows only how to turn on a login.",
    )
    sync_roots: list[Path] = Field(
        default_factory=list,
        description="Server folders (with their subfolders) that the documents page may sync; none by "
        "default, so browser users add documents by upload only. The CLI (`chatbot index`) may index any "
        "folder: whoever runs it already has the server's files.",
    )

    @model_validator(mode="after")
    def _password_needed(self) -> UiSettings:
        if self.auth == "password" and not (self.password and self.password.get_secret_value()):
            raise ValueError("ui.auth = 'password' needs ui.password (APP_UI__PASSWORD)")
        return self


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A 5 MB question once took 133 s and 1.5 GB; 1 MB holds a long conversation sent as history.
    max_request_bytes: int = Field(
        1_000_000, ge=1024, description="Largest request body the HTTP API reads; a larger one gets 413."
    )
    # 44 unbounded concurrent requests once made /health take 46 s. A local model answers one question at a
    # time, so 4 is one answering and three waiting their turn.
    max_concurrent: int = Field(
        4,
        ge=1,
        description="Chat requests being answered or waiting for the model at once; one more gets 429 with a "
        "Retry-After header.",
    )
    # One client holding every slot would turn everyone else away: one answering and one waiting each.
    max_concurrent_per_key: int = Field(
        2,
        ge=1,
        description="Of those, the most one API key may hold (without keys: this machine's clients together); "
        "one more gets 429.",
    )
    retry_after: int = Field(
        5, ge=1, description="Seconds a client turned away with 429 is asked to wait (Retry-After)."
    )


class Settings(BaseSettings):
    """Every setting of the assistant. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="APP_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(
        Path("var"), description="Where collections, conversations, converted models and runs are stored."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Logging level.")
    models: ModelSettings = Field(
        default_factory=ModelSettings, description="Which models, and where they run."
    )
    generation: GenerationSettings = Field(
        default_factory=GenerationSettings, description="Decoding defaults; requests may override them."
    )
    chat: ChatSettings = Field(default_factory=ChatSettings, description="The chat chain.")
    retrieval: RetrievalSettings = Field(
        default_factory=RetrievalSettings, description="Indexing and search."
    )
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings, description="Training and registry.")
    ui: UiSettings = Field(default_factory=UiSettings, description="The browser app.")
    api: ApiSettings = Field(default_factory=ApiSettings, description="The HTTP API (chatbot serve-api).")

    @field_validator("retrieval")
    @classmethod
    def _overlap_below_chunk(cls, value: RetrievalSettings) -> RetrievalSettings:
        # The chunker would otherwise cap it silently, and the setting would not mean what it says.
        if value.chunk_overlap >= value.chunk_tokens:
            raise ValueError(
                f"retrieval.chunk_overlap ({value.chunk_overlap}) must be less than retrieval.chunk_tokens "
                f"({value.chunk_tokens}): consecutive chunks share that many of their tokens"
            )
        return value


def _read_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise SettingsError(f"settings file {path} is a folder; give the YAML file inside it")
    if not path.is_file():
        raise SettingsError(f"settings file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"settings file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from exc
    except OSError as exc:
        raise SettingsError(f"settings file {path} cannot be read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"settings file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must hold a mapping of setting names to values")
    return data


def _is_secret(loc: tuple[Any, ...]) -> bool:
    """Whether the field at ``loc`` holds a secret (a SecretStr), or is unknown (a misspelt secret is still a
    secret): the value given for it is never echoed in an error."""
    model: Any = Settings
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not isinstance(part, str) or fields is None:
            return False
        if part not in fields:
            return True
        model = fields[part].annotation
    return "SecretStr" in str(model)


def _describe(exc: ValidationError, origin: str) -> str:
    lines = [f"invalid settings ({origin}):"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        env = "APP_" + "__".join(str(p) for p in err["loc"]).upper()
        value = err.get("input")
        if isinstance(value, dict):
            shown = ""
        elif _is_secret(err["loc"]):
            shown = " (value not shown)"
        else:
            shown = f" (got {value!r})"
        lines.append(f"  - {field} [env {env}]: {err['msg']}{shown}")
    return "\n".join(lines)


def _section(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _field_at(names: list[str]) -> Any:
    """The annotation of the setting at ``names`` (lower case), or None when there is no such setting."""
    annotation: Any = Settings
    for name in names:
        model = _section(annotation)
        if model is None or name not in model.model_fields:
            return None
        annotation = model.model_fields[name].annotation
    return annotation


def _json_kind(annotation: Any) -> str | None:
    """'list' or 'object' when pydantic-settings reads an environment variable for ``annotation`` as JSON."""
    if _section(annotation) is not None:
        return "object"
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return "list"
    if origin is dict:
        return "object"
    if origin in (typing.Union, types.UnionType):
        return next(filter(None, (_json_kind(a) for a in typing.get_args(annotation))), None)
    return None


def _env_vars(environ: Mapping[str, str]) -> dict[str, list[str]]:
    """Each APP_ variable but APP_CONFIG_FILE, with its path of lower-case names (APP_UI__AUTH: ui, auth)."""
    return {
        key: key[len(ENV_PREFIX) :].lower().split("__")
        for key in sorted(environ)
        if key.upper().startswith(ENV_PREFIX) and key.upper() != CONFIG_ENV_VAR
    }


def _env_name(names: list[str]) -> str:
    return ENV_PREFIX + "__".join(names).upper()


def _closest(names: list[str]) -> tuple[str | None, bool]:
    """The variable that one whose first part matches no setting was probably meant to be, and whether it is
    surely ours: a section's field with one underscore where two belong (APP_UI_LANGUAGE), or a name with our
    nested delimiter ``__`` (APP_RETREIVAL__CHUNK_TOKENS), which other programs' APP_ variables rarely have."""
    first, rest = names[0], names[1:]
    for field, info in Settings.model_fields.items():
        section = _section(info.annotation)
        sub = first.removeprefix(field + "_")
        if section is not None and sub != first and sub in section.model_fields:
            return _env_name([field, sub, *rest]), True
    # 0.75 takes DATADIR for DATA_DIR and RETREIVAL for RETRIEVAL, not another program's API_KEY for API
    close = difflib.get_close_matches(first, list(Settings.model_fields), n=1, cutoff=0.75)
    return (_env_name([close[0], *rest]) if close else None), bool(rest)


def _check_env_names(environ: Mapping[str, str]) -> None:
    """Refuse an APP_ variable that is surely a misspelt setting (pydantic-settings would ignore it); warn
    about any other that matches no setting, with the closest one if there is one (APP_DATADIR), since
    another program may own it (a container's APP_MODE or APP_UID must not stop the assistant). Values are
    never shown: a misspelt secret is still a secret."""
    fields = list(Settings.model_fields)
    for key, names in _env_vars(environ).items():
        if names[0] in fields:
            continue  # an unknown field inside a section is refused by the section itself (extra="forbid")
        known = f"settings are {', '.join(_env_name([f]) for f in fields)}; sections take __FIELD"
        guess, surely = _closest(names)
        if guess and surely:
            raise SettingsError(
                f"environment variable {key} matches no setting: did you mean {guess}? ({known})"
            )
        hint = f"did you mean {guess}? " if guess else ""
        log.warning("environment variable %s matches no setting and is ignored (%s%s)", key, hint, known)


def _env_parse_error(exc: Exception, origin: str, environ: Mapping[str, str]) -> str:
    """What pydantic-settings' 'error parsing value for field' means: a variable that must hold JSON."""
    for key, names in _env_vars(environ).items():
        annotation = _field_at(names)
        kind = _json_kind(annotation)
        if kind is None:
            continue
        try:
            json.loads(environ[key])
        except ValueError as problem:
            section = _section(annotation)
            if section is None:
                shown = f"got {environ[key]!r}: {problem}"
                item = (
                    '"/srv/docs", "/srv/wiki"' if Path in typing.get_args(annotation) else '"first", "second"'
                )
                example = f"{key}='[{item}]'" if kind == "list" else f"""{key}='{{"key": 1}}'"""
            else:  # a section may hold a secret: its value is not shown
                shown = f"not valid JSON: {problem}"
                first = next(iter(section.model_fields))
                example = (
                    f"""{key}='{{"{first}": ...}}', or one field at a time: {_env_name([*names, first])}"""
                )
            return (
                f"invalid settings ({origin}):\n  - {'.'.join(names)} [env {key}]: must be a JSON {kind} "
                f"({shown}), e.g. {example}"
            )
    return f"invalid settings ({origin}): {exc}"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from ``config_file`` (or ``$APP_CONFIG_FILE``), the environment and ``overrides``.

    Raises :class:`SettingsError` naming the file, the field and its environment variable on bad input.
    """
    path = config_file or os.environ.get(CONFIG_ENV_VAR)
    file_values = _read_yaml(Path(path)) if path else {}

    class _Layered(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            # Highest first; pydantic-settings deep-merges nested sections across the layers.
            return (init_settings, env_settings, InitSettingsSource(settings_cls, file_values))

    origin = f"file {path} + environment" if path else "environment"
    _check_env_names(os.environ)
    try:
        return _Layered(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, origin)) from exc
    except pydantic_settings.SettingsError as exc:  # an APP_ variable that must hold JSON does not
        raise SettingsError(_env_parse_error(exc, origin, os.environ)) from exc


def default_settings() -> Settings:
    """The defaults alone, whatever the environment says (for documentation)."""
    values = {
        name: field.default_factory() if field.default_factory else field.default
        for name, field in Settings.model_fields.items()
    }
    return Settings.model_construct(**values)


def settings_yaml(settings: BaseModel, indent: int = 0) -> str:
    """``settings`` as YAML with each field's description as a comment above it (secrets masked)."""
    lines: list[str] = []
    pad = "  " * indent
    for name, info in type(settings).model_fields.items():
        value = getattr(settings, name)
        for line in (info.description or "").splitlines() or [""]:
            if line:
                lines.append(f"{pad}# {line}")
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            lines.append(settings_yaml(value, indent + 1))
            continue
        if isinstance(value, SecretStr):
            value = "**********" if value.get_secret_value() not in ("", "none") else value.get_secret_value()
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple | list):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        dumped = yaml.safe_dump({name: value}, allow_unicode=True, default_flow_style=True, width=10**6)
        lines.append(pad + dumped.strip().removeprefix("{").removesuffix("}"))
    return "\n".join(lines)
