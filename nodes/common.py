"""Shared constants and helpers of the node layer: model-file lookup (with a hint for files placed in the wrong model
folder) and user-visible notices (log + the node's progress text in the UI)."""

import logging
from pathlib import Path

import folder_paths

CATEGORY = "Sana"
SANA_NAME_HINTS = ("sana",)  # file names of the released Sana models all contain "Sana"/"SANA"
MAX_LISTED_FILES = 4


def misplaced_files(folder: str, hints=SANA_NAME_HINTS) -> list:
    """Names in the ComfyUI model folder `folder` that look like Sana files (by name), e.g. DiTs put in
    `checkpoints/` where the pack's loaders do not look. Empty when the folder is not registered."""
    try:
        names = folder_paths.get_filename_list(folder)
    except KeyError:
        return []
    return [n for n in names if any(h in Path(n).name.lower() for h in hints)]


def misplaced_note(folder: str, target: str) -> str:
    """One sentence listing Sana-looking files of `folder` that belong in `target`, or "" when there are none."""
    names = misplaced_files(folder)
    if not names:
        return ""
    more = f" and {len(names) - MAX_LISTED_FILES} more" if len(names) > MAX_LISTED_FILES else ""
    return (f" Found Sana file(s) in models/{folder}, where this loader does not look: "
            f"{', '.join(names[:MAX_LISTED_FILES])}{more}; move them to models/{target}.")


def resolve_model_file(folder: str, name: str, wrong_folders=()) -> Path:
    """Full path of ``name`` inside the ComfyUI model folder ``folder``, or a ValueError naming the folders searched
    (and where the file is when it sits in one of `wrong_folders`)."""
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        searched = ", ".join(folder_paths.get_folder_paths(folder))
        elsewhere = [(f, p) for f in wrong_folders for p in [_full_path(f, name)] if p is not None]
        hint = "".join(f" It is in '{f}' ({p}): move it to models/{folder}." for f, p in elsewhere)
        raise ValueError(
            f"Model file '{name}' was not found in the '{folder}' folder (searched: {searched}).{hint} "
            f"Put the file there or pick another entry from the list."
        )
    return Path(path)


def _full_path(folder: str, name: str):
    try:
        return folder_paths.get_full_path(folder, name)
    except KeyError:
        return None


def notify_ui(text: str, level: int | None = logging.WARNING) -> None:
    """Log `text` (unless `level` is None) and show it as the executing node's progress text in the UI (ComfyUI's
    PromptServer.send_progress_text; skipped outside a running prompt or where the server lacks it)."""
    if level is not None:
        logging.log(level, text)
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer
    except ImportError:
        return
    context, server = get_executing_context(), getattr(PromptServer, "instance", None)
    if context is None or server is None or not hasattr(server, "send_progress_text"):
        return
    server.send_progress_text(text, context.node_id, getattr(server, "client_id", None))
