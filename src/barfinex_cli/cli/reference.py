"""Render the command reference (docs/commands.md) from the Typer app itself, so it cannot drift.

`python -m barfinex_cli.cli.reference > docs/commands.md` regenerates it; a test renders it
again and compares, so an option added, renamed or re-documented without regenerating the page
fails the suite. Every command gets its usage line, the first paragraph of its help, and a table
of its arguments and options (with defaults and environment variables).
"""

from __future__ import annotations

from typing import Any

import typer

HEADER = """# Command reference

Generated from the `bfx` command tree by `python -m barfinex_cli.cli.reference > docs/commands.md`;
do not edit by hand (a test fails when this page and the code disagree). `bfx COMMAND --help`
prints the same, with examples.

Exit codes: 0 ok · 1 an error you can fix (the message says how) · 2 wrong usage or an unknown
name · 3 a service (Redis, the provider, an exchange) does not answer · 4 a service answers but
refuses the credentials (a wrong or missing token).
"""


def render() -> str:
    """Return the whole reference page as Markdown."""
    from barfinex_cli.cli.main import app

    root = typer.main.get_command(app)
    root_ctx = typer.Context(root, info_name="bfx")
    parts = [HEADER, _section(root, root_ctx, "Global options (before the command)")]
    for ctx, command in _leaves(root, root_ctx):
        parts.append(_section(command, ctx, ctx.command_path))
    return "\n".join(parts).rstrip() + "\n"


def _leaves(command: Any, ctx: Any) -> list[tuple[Any, Any]]:
    found: list[tuple[Any, Any]] = []
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        if sub is None or sub.hidden:
            continue
        sub_ctx = typer.Context(sub, info_name=name, parent=ctx)
        if hasattr(sub, "list_commands") and sub.list_commands(sub_ctx):
            found += _leaves(sub, sub_ctx)
        else:
            found.append((sub_ctx, sub))
    return found


def _section(command: Any, ctx: Any, title: str) -> str:
    pieces = " ".join(command.collect_usage_pieces(ctx))
    lines = [f"## {title}", "", "```", f"{ctx.command_path} {pieces}".rstrip(), "```", ""]
    summary = _first_paragraph(command.help or "")
    if summary:
        lines += [summary, ""]
    rows = [_row(p) for p in command.get_params(ctx) if p.name != "help"]
    if title.startswith("Global"):
        rows = [r for r in rows if not r[0].startswith("`--install") and "completion" not in r[0]]
    if rows:
        lines += ["| argument / option | default | help |", "|---|---|---|"]
        lines += [f"| {name} | {default} | {text} |" for name, default, text in rows]
        lines.append("")
    return "\n".join(lines)


def _row(param: Any) -> tuple[str, str, str]:
    if param.param_type_name == "argument":
        name = f"`{(param.metavar or param.name).upper()}`"
        required = param.required
    else:
        flags = [*param.opts, *param.secondary_opts]
        name = " / ".join(f"`{flag}`" for flag in flags)
        required = param.required
    default = "required" if required else _default(param)
    text = " ".join((getattr(param, "help", None) or "").split())
    envvar = getattr(param, "envvar", None)
    if envvar:
        text += f" Env: `{envvar}`."
    return name, default, text.replace("|", "\\|")


def _default(param: Any) -> str:
    value = param.default
    if callable(value) or value is None or value == () or value == []:
        return ""
    if isinstance(value, bool):
        if param.param_type_name == "option" and getattr(param, "is_flag", False):
            return "on" if value else "off"
        return str(value).lower()
    return f"`{value}`"


def _first_paragraph(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())


if __name__ == "__main__":
    import sys

    sys.stdout.write(render())
