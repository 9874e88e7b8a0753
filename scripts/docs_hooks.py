"""mkdocs hook (``hooks:`` in mkdocs.yml): reference pages rendered from the code when the site is built.

``docs/reference/cli.md`` holds the marker :data:`MARKER`; at build time it is replaced by the help of
``contagion`` and of every command registered on its typer app, exactly as ``contagion COMMAND --help``
prints it (click's plain formatter at a fixed width, so the page does not depend on the terminal). No help
text is copied by hand: a new command or option appears in the reference on the next build.
``docs/reference/config.md`` holds :data:`CONFIG_MARKER`, replaced by a table of every key of the
experiment config, read from its pydantic model (defaults and descriptions as the code declares them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MARKER = "<!-- cli-reference: generated from the commands' --help at build time -->"
CONFIG_MARKER = "<!-- config-reference: generated from the config model at build time -->"
WIDTH = 80  # click's own cap: the text a terminal shows for --help
SRC = Path(__file__).resolve().parents[1] / "src"


def _use_checkout() -> None:
    """Import ``contagion`` from this checkout's ``src`` (not another installed copy)."""
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))


def _root_command() -> Any:
    """The click command behind ``contagion``."""
    _use_checkout()
    import typer.main

    from contagion.cli import app  # importing the package registers every command on ``app``

    return typer.main.get_command(app)


def _context(command: Any, name: str, parent: Any = None) -> Any:
    """A click context at a fixed width (typer may ship its own copy of click: use the command's class)."""
    return command.context_class(command, info_name=name, parent=parent, terminal_width=WIDTH,
                                 max_content_width=WIDTH)


def _walk(command: Any, ctx: Any, path: list[str]) -> list[tuple[list[str], Any, Any]]:
    """(name path, command, context) for the command and every sub-command, in ``--help`` order."""
    found = [(path, command, ctx)]
    if hasattr(command, "list_commands"):  # a group
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            found += _walk(sub, _context(sub, name, ctx), [*path, name])
    return found


def commands() -> list[tuple[str, str, str]]:
    """(full command name, one-line summary, full help text) of ``contagion`` and each of its commands."""
    root = _root_command()
    out = []
    for path, command, command_ctx in _walk(root, _context(root, "contagion"), ["contagion"]):
        out.append((" ".join(path), command.get_short_help_str(limit=110), command.get_help(command_ctx)))
    return out


def _anchor(name: str) -> str:
    return name.replace(" ", "-")


def cli_reference_markdown() -> str:
    """The generated part of the CLI reference page: a table of commands, then each command's help."""
    rows = commands()
    lines = ["| command | what it does |", "| --- | --- |"]
    for name, short, _ in rows[1:]:
        lines.append(f"| [`{name}`](#{_anchor(name)}) | {short.replace('|', '/')} |")
    lines.append("")
    for name, _, text in rows:
        lines += [f"## `{name}` {{#{_anchor(name)}}}", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(lines)


def _value(value: Any) -> str:
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return "see below"
    if value is None:
        return "–"
    return f"`{value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}`"


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "/")


def config_fields() -> list[tuple[str, str, str]]:
    """(key, default, description) of every config key; nested settings as ``section.key``.

    A nested section's default is the config's own default for it (``generation.max_tokens`` differs
    from the generation model's), so the table says what a config that omits the key gets.
    """
    _use_checkout()
    from pydantic import BaseModel

    from contagion.experiment.config import ExperimentConfig

    rows: list[tuple[str, str, str]] = []
    sections: list[tuple[str, BaseModel]] = []
    for name, field in ExperimentConfig.model_fields.items():
        if field.is_required():
            rows.append((name, "required", _cell(field.description)))
            continue
        default = field.get_default(call_default_factory=True)
        rows.append((name, _value(default), _cell(field.description)))
        if isinstance(default, BaseModel):
            sections.append((name, default))
    for section, instance in sections:
        for name, field in type(instance).model_fields.items():
            rows.append((f"{section}.{name}", _value(getattr(instance, name)), _cell(field.description)))
    return rows


def config_reference_markdown() -> str:
    lines = ["| key | default | what it does |", "| --- | --- | --- |"]
    lines += [f"| `{key}` | {default} | {description} |" for key, default, description in config_fields()]
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs event: fill the markers of the generated reference pages."""
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, cli_reference_markdown())
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, config_reference_markdown())
    return markdown
