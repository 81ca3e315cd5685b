"""The interface's words in English and Spanish. Model answers are never translated, only the interface."""

from __future__ import annotations

from collections.abc import Callable

from chatbot.prompt import UNSURE

LANGUAGES = ("en", "es")

STRINGS: dict[str, dict[str, str]] = {
    "app_title": {"en": "Domain Assistant", "es": "Asistente de Dominio"},
    "page_chat": {"en": "Chat", "es": "Chat"},
    "page_documents": {"en": "Documents", "es": "Documentos"},
    "page_training": {"en": "Training", "es": "Entrenamiento"},
    "ask_placeholder": {
        "en": "Ask a question about the documents",
        "es": "Haga una pregunta sobre los documentos",
    },
    "new_conversation": {"en": "New conversation", "es": "Nueva conversación"},
    "conversations": {"en": "Conversations", "es": "Conversaciones"},
    "no_conversations": {"en": "No conversations yet.", "es": "Todavía no hay conversaciones."},
    "legacy_link": {
        "en": "This link holds {n} conversation(s) from an earlier version, which kept them in the page's "
        "address. Conversations are now kept by this browser; move them here to keep them (the link then "
        "shows nothing).",
        "es": "Este enlace contiene {n} conversación(es) de una versión anterior, que las guardaba en la "
        "dirección de la página. Ahora las conversaciones las guarda este navegador; muévalas aquí para "
        "conservarlas (el enlace dejará de mostrarlas).",
    },
    "allow_replace": {
        "en": "Allow this sync to delete most of the collection's files, or to switch it to another folder",
        "es": "Permitir que esta sincronización borre la mayoría de los archivos de la colección, o la cambie "
        "a otra carpeta",
    },
    "legacy_move": {"en": "Move them to this browser", "es": "Moverlas a este navegador"},
    "rename": {"en": "Rename", "es": "Renombrar"},
    "delete": {"en": "Delete", "es": "Borrar"},
    "title": {"en": "Title", "es": "Título"},
    "collection": {"en": "Collection", "es": "Colección"},
    "model_version": {"en": "Model version", "es": "Versión del modelo"},
    "version_current": {"en": "current (registry)", "es": "actual (registro)"},
    "version_base": {"en": "base model", "es": "modelo base"},
    "generation": {"en": "Generation settings", "es": "Parámetros de generación"},
    "extractive_help": {
        "en": "Answers quote the sources word for word (local model).",
        "es": "Las respuestas citan las fuentes palabra por palabra (modelo local).",
    },
    "drafts_help": {
        "en": "Answers drafted from the model's best first words; the best supported one is shown (1 = stream "
        "a single answer as it is written).",
        "es": "Respuestas redactadas a partir de las mejores primeras palabras del modelo; se muestra la mejor "
        "respaldada (1 = mostrar una sola respuesta mientras se escribe).",
    },
    "no_collection": {
        "en": "No collection yet: create one on the Documents page.",
        "es": "Todavía no hay colecciones: cree una en la página Documentos.",
    },
    "sources": {"en": "Sources", "es": "Fuentes"},
    "unsure": {language: f"⚠️ {text}" for language, text in UNSURE.items()},
    "loading_model": {"en": "Loading the model…", "es": "Cargando el modelo…"},
    "relevance": {"en": "relevance", "es": "relevancia"},
    "page": {"en": "page", "es": "página"},
    "cited": {"en": "cited", "es": "citada"},
    "feedback_prompt": {"en": "Was this answer good?", "es": "¿Fue buena esta respuesta?"},
    "correction": {"en": "Correct answer (optional)", "es": "Respuesta correcta (opcional)"},
    "save_feedback": {"en": "Save feedback", "es": "Guardar valoración"},
    "feedback_saved": {"en": "Thank you: feedback saved.", "es": "Gracias: valoración guardada."},
    "error": {"en": "Something went wrong", "es": "Algo salió mal"},
    "collections": {"en": "Collections", "es": "Colecciones"},
    "create_collection": {"en": "Create a collection", "es": "Crear una colección"},
    "name": {"en": "Name", "es": "Nombre"},
    "create": {"en": "Create", "es": "Crear"},
    "upload": {"en": "Upload files", "es": "Subir archivos"},
    "upload_and_sync": {"en": "Add and index", "es": "Añadir e indexar"},
    "server_folder": {"en": "Sync a folder on the server", "es": "Sincronizar una carpeta del servidor"},
    "folder_path": {"en": "Folder path", "es": "Ruta de la carpeta"},
    "replace_existing": {
        "en": "Replace files with the same name",
        "es": "Reemplazar los archivos con el mismo nombre",
    },
    "upload_exists": {
        "en": "Already uploaded: {names}. Nothing was saved: tick “Replace files with the same name” to "
        "replace them, or rename the files.",
        "es": "Ya subidos: {names}. No se guardó nada: marque «Reemplazar los archivos con el mismo nombre» "
        "para reemplazarlos, o cambie su nombre.",
    },
    "synced_from_folder": {
        "en": "This collection is synced from the server folder {folder}: add documents to that folder "
        "(uploads go to collections of their own).",
        "es": "Esta colección se sincroniza desde la carpeta del servidor {folder}: añada los documentos a esa "
        "carpeta (las subidas van a colecciones propias).",
    },
    "folder_sync_off": {
        "en": "Syncing server folders from the browser is off (setting ui.sync_roots): upload files instead.",
        "es": "Sincronizar carpetas del servidor desde el navegador está desactivado (ajuste ui.sync_roots): "
        "suba los archivos.",
    },
    "sync": {"en": "Sync", "es": "Sincronizar"},
    "syncing": {"en": "Indexing…", "es": "Indexando…"},
    "sync_done": {"en": "Sync finished", "es": "Sincronización terminada"},
    "added": {"en": "added", "es": "añadidos"},
    "updated": {"en": "updated", "es": "actualizados"},
    "deleted": {"en": "deleted", "es": "borrados"},
    "unchanged": {"en": "unchanged", "es": "sin cambios"},
    "failed": {"en": "failed", "es": "con errores"},
    "files": {"en": "Files", "es": "Archivos"},
    "chunks": {"en": "Passages", "es": "Fragmentos"},
    "last_sync": {"en": "Last sync", "es": "Última sincronización"},
    "failures": {"en": "Files that could not be indexed", "es": "Archivos que no se pudieron indexar"},
    "delete_collection": {"en": "Delete this collection", "es": "Borrar esta colección"},
    "confirm_delete": {"en": "Yes, delete it", "es": "Sí, borrarla"},
    "unsupported_files": {
        "en": "Not indexed, of a type the assistant cannot read: {names}",
        "es": "Sin indexar, de un tipo que el asistente no sabe leer: {names}",
    },
    "title_empty": {"en": "A conversation needs a title.", "es": "Una conversación necesita un título."},
    "beams_help": {
        "en": "Beam search needs the transformers engine (models.engine); this model is served by llama.cpp.",
        "es": "La búsqueda en haz necesita el motor transformers (models.engine); este modelo lo sirve llama.cpp.",
    },
    "delete_collection_help": {
        "en": "Deletes its index and the files uploaded to it here. Files in a server folder are not touched.",
        "es": "Borra su índice y los archivos subidos aquí. Los archivos de una carpeta del servidor no se tocan.",
    },
    "delete_while_syncing": {
        "en": "It is being indexed right now; delete it once the sync has finished.",
        "es": "Se está indexando ahora; bórrela cuando termine la sincronización.",
    },
    "start_retrain": {"en": "Retrain on what is new", "es": "Reentrenar con lo nuevo"},
    "start_training": {"en": "Train on chosen data", "es": "Entrenar con datos elegidos"},
    "training_running": {"en": "Training is running", "es": "El entrenamiento está en marcha"},
    "training_idle": {"en": "No training is running.", "es": "No hay ningún entrenamiento en marcha."},
    "stop": {"en": "Stop", "es": "Detener"},
    "loss_curve": {"en": "Loss", "es": "Pérdida"},
    "log": {"en": "Log", "es": "Registro"},
    "versions": {"en": "Model versions", "es": "Versiones del modelo"},
    "promote": {"en": "Promote", "es": "Promover"},
    "rollback": {"en": "Roll back", "es": "Volver atrás"},
    "no_versions": {"en": "No trained version yet.", "es": "Todavía no hay versiones entrenadas."},
    "password": {"en": "Password", "es": "Contraseña"},
    "log_in": {"en": "Log in", "es": "Iniciar sesión"},
    "log_out": {"en": "Log out", "es": "Cerrar sesión"},
    "wrong_password": {"en": "Wrong password.", "es": "Contraseña incorrecta."},
    "too_many_attempts": {
        "en": "Too many wrong passwords: try again in {seconds} s.",
        "es": "Demasiadas contraseñas incorrectas: vuelva a intentarlo en {seconds} s.",
    },
    "open_network_refused": {
        "en": "This app is served on {where} with no login, so anyone who can reach it could use it. "
        "Turn on a login (ui.auth = 'password' or 'oidc'), serve it on 127.0.0.1 (the default of `make run`), "
        "or allow it explicitly with ui.allow_open_network = true. See docs/security.md.",
        "es": "Esta aplicación se sirve en {where} sin inicio de sesión: cualquiera que llegue a ella podría "
        "usarla. Active un inicio de sesión (ui.auth = 'password' u 'oidc'), sírvala en 127.0.0.1 (lo que hace "
        "`make run`), o permítalo expresamente con ui.allow_open_network = true. Véase docs/security.md.",
    },
    "open_network_warning": {
        "en": "Served on {where} with no login: anyone who can reach this address can use the app.",
        "es": "Servida en {where} sin inicio de sesión: cualquiera que llegue a esta dirección puede usarla.",
    },
    "language": {"en": "Language", "es": "Idioma"},
    "data": {"en": "Training data", "es": "Datos de entrenamiento"},
}


def pick_language(setting: str, browser_locale: str | None) -> str:
    """The setting if it names a language; else the browser's when supported; else English."""
    if setting in LANGUAGES:
        return setting
    primary = (browser_locale or "").replace("_", "-").split("-")[0].lower()
    return primary if primary in LANGUAGES else "en"


def translator(language: str) -> Callable[[str], str]:
    def t(key: str) -> str:
        entry = STRINGS[key]
        return entry.get(language) or entry["en"]

    return t
