"""The reference pages, generated from the code when the site is built, so they cannot drift from it.

- ``reference/cli.md``: every command of the typer app, its usage, arguments and options;
- ``reference/configuration.md``: every field of the settings model with its variable and default;
- ``reference/dataset-spec.md``: every field of a dataset spec (the spec model's JSON Schema);
- ``reference/rest.md``: every operation of the REST API's OpenAPI document (built by the API's app
  factory), its parameters, body, statuses and schemas, as plain Markdown: the page needs no script,
  so it works offline.

MkDocs loads this file as a hook (``hooks:`` in mkdocs.yml) and adds the pages as generated files;
nothing is written into ``docs/``. ``python docs/gen_ref.py OUT`` writes them to a folder instead.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["PAGES", "cli_commands", "cli_reference", "config_reference", "openapi_document", "rest_operations",
           "rest_reference", "spec_reference"]

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # the hook runs inside mkdocs: the project must be importable
    sys.path.insert(0, str(_ROOT))

_CODE_SPAN = re.compile(r"(`[^`]*`)")
_SPECIAL = re.compile(r"([\\*_\[\]|<>#])")


def _text(value: Any) -> str:
    """Text from code (help, descriptions) safe in a Markdown table cell: code spans kept as code,
    everything else with Markdown and HTML characters escaped, on one line."""
    text = " ".join(str(value or "").split())
    parts = []
    for piece in _CODE_SPAN.split(text):
        if piece.startswith("`") and piece.endswith("`") and len(piece) > 1:
            parts.append(piece.replace("|", "\\|"))
        else:
            parts.append(_SPECIAL.sub(r"\\\1", piece.replace("&", "&amp;")))
    return "".join(parts)


def _code(value: Any) -> str:
    """A value shown as inline code in a table cell."""
    text = str(value).replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --- CLI ---------------------------------------------------------------------------------------

def _commands(command: Any, path: list[str], parent_ctx: Any = None):
    """(path, command, context) for the app and every command under it, depth first."""
    ctx = command.context_class(command, info_name=path[-1], parent=parent_ctx)
    yield path, command, ctx
    for name, sub in getattr(command, "commands", {}).items():
        if not getattr(sub, "hidden", False):
            yield from _commands(sub, [*path, name], ctx)


def cli_commands() -> list[str]:
    """Every command path of the ``skiff`` tool (``skiff``, ``skiff ingest``, ``skiff models list``…)."""
    return [" ".join(path) for path, _, _ in _commands(_cli(), ["skiff"])]


def _cli() -> Any:
    import typer

    from skiff.cli import app

    return typer.main.get_command(app)


def _usage(command: Any) -> list[str]:
    pieces = ["[OPTIONS]"] if any(p.param_type_name == "option" for p in command.params) else []
    for p in command.params:
        if p.param_type_name == "argument" and not getattr(p, "hidden", False):
            name = p.name.upper() + ("..." if p.nargs == -1 else "")
            pieces.append(name if p.required else f"[{name}]")
    if getattr(command, "commands", None):
        pieces.append("[COMMAND [ARGS]...]" if command.invoke_without_command else "COMMAND [ARGS]...")
    return pieces


def _param_row(param: Any, ctx: Any) -> str:
    if param.param_type_name == "argument":
        name = _code(param.name.upper())
    else:
        opts = list(param.opts) + list(getattr(param, "secondary_opts", []))
        name = " ".join(_code(o) for o in opts)
    # typer renders the type from the annotation (<str>, <path>, <list[str]>)
    type_name = param.display_type(ctx).strip("<>")
    if getattr(param, "is_flag", False):
        type_name = "flag"
    elif getattr(param, "multiple", False) or getattr(param, "nargs", 1) == -1:
        type_name += ", repeatable"
    default = param.default
    if getattr(param, "required", False):
        shown = "required"
    elif default is None or default is False or default == () or callable(default):
        shown = ""
    elif default is True and getattr(param, "is_flag", False):
        shown = "on"
    else:
        shown = _code(default)
    return f"| {name} | {_text(type_name)} | {shown} | {_text(getattr(param, 'help', '') or '')} |"


def cli_reference() -> str:
    lines = [
        "# CLI reference",
        "",
        "Generated from the `skiff` command-line tool when this site was built; `skiff COMMAND --help`",
        "prints the same. Exit codes: `0` success, `1` a gate said no, `2` usage or input error, `3` an",
        "unexpected failure (`--debug` shows the traceback); see [the CLI's conventions](../getting-started.md#the-command-line-tool).",
        "",
    ]
    for path, command, ctx in _commands(_cli(), ["skiff"]):
        title = " ".join(path)
        lines += [f"## {title} {{#{_slug(title)}}}", ""]
        usage = " ".join([title, *_usage(command)])
        lines += ["```", usage, "```", ""]
        help_text = (command.help or "").strip()
        if help_text:
            lines += [_paragraphs(help_text), ""]
        subs = getattr(command, "commands", {})
        if subs and path[1:]:
            lines += ["Commands: " + ", ".join(
                f"[{name}](#{_slug(title + ' ' + name)})" for name in subs), ""]
        params = [p for p in command.params if not getattr(p, "hidden", False)]
        if params:
            lines += ["| argument / option | type | default | meaning |", "|---|---|---|---|"]
            lines += [_param_row(p, ctx) for p in params]
            lines += ["| `-h`, `--help` | flag |  | Show the help and exit. |", ""]
    return "\n".join(lines) + "\n"


def _paragraphs(text: str) -> str:
    return "\n\n".join(_text(p) for p in re.split(r"\n\s*\n", text))


# --- configuration -----------------------------------------------------------------------------

def config_reference() -> str:
    from skiff.config import CONFIG_FILE, Settings

    prefix = Settings.model_config.get("env_prefix", "")
    lines = [
        "# Configuration reference",
        "",
        f"Generated from skiff's settings model when this site was built. Settings come from `{CONFIG_FILE}`",
        "in the working folder (or the file named by `--config` / `SKIFF_CONFIG`), then environment",
        f"variables (`{prefix}<FIELD>`; nested keys joined with `__`, e.g. `SKIFF_STORAGE_OPTIONS__ENDPOINT_URL`),",
        "then command-line flags, each overriding the one before. Unknown keys are errors;",
        "`skiff config` prints the result.",
        "",
        "| setting | variable | type | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default
        shown = "" if default is None else _code(json.dumps(default) if not isinstance(default, str) else default)
        annotation = getattr(field.annotation, "__name__", None) or str(field.annotation)
        annotation = annotation.replace("typing.", "").replace("NoneType", "None")
        lines.append(f"| `{name}` | `{prefix}{name.upper()}` | {_text(annotation)} | {shown} | "
                     f"{_text(field.description)} |")
    return "\n".join(lines) + "\n"


# --- REST --------------------------------------------------------------------------------------

def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the REST API, built by its app factory over a throwaway root."""
    from skiff.api import create_app
    from skiff.api.auth import TokenSet
    from skiff.config import Settings

    with tempfile.TemporaryDirectory(prefix="skiff-docs-") as root:
        app = create_app(Settings(root=root), tokens=TokenSet(admin=frozenset({"0" * 64})), environments=root)
        return app.openapi()


def _schema_type(schema: dict[str, Any]) -> str:
    """A JSON Schema as one short Markdown phrase, with links to the named schemas."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#schema-{_slug(name)})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_schema_type(s) for s in schema[key])
    if "allOf" in schema:
        return " and ".join(_schema_type(s) for s in schema["allOf"])
    if "const" in schema:
        return _code(json.dumps(schema["const"]))
    if "enum" in schema:
        return " \\| ".join(_code(json.dumps(v)) for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        text = f"array of {_schema_type(schema.get('items', {}))}"
    elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        text = f"object of {_schema_type(schema['additionalProperties'])}"
    else:
        text = str(kind)
    limits = [f"{k} {schema[k]}" for k in ("minimum", "maximum", "minLength", "maxLength", "maxItems")
              if k in schema]
    if "pattern" in schema:
        limits.append(f"pattern {_code(schema['pattern'])}")
    if limits:
        text += " (" + ", ".join(_text(x) if not x.startswith("pattern") else x for x in limits) + ")"
    return text


def _body_schema(content: dict[str, Any]) -> str:
    parts = []
    for media, body in content.items():
        parts.append(f"{_code(media)}: {_schema_type(body.get('schema', {}))}")
    return "; ".join(parts)


def _schema_sections(schemas: dict[str, Any], level: str = "###") -> list[str]:
    """One section per named schema: its description and a table of its fields."""
    lines: list[str] = []
    for name, schema in sorted(schemas.items()):
        lines += [f"{level} {name} {{#schema-{_slug(name)}}}", ""]
        if schema.get("description"):
            lines += [_paragraphs(schema["description"]), ""]
        props = schema.get("properties", {})
        if props:
            required = set(schema.get("required", []))
            lines += ["| field | type | required | default | meaning |", "|---|---|---|---|---|"]
            for field, sub in props.items():
                default = _code(json.dumps(sub["default"])) if "default" in sub else ""
                lines.append(f"| `{field}` | {_schema_type(sub)} | {'yes' if field in required else 'no'} | "
                             f"{default} | {_text(sub.get('description', ''))} |")
            if schema.get("additionalProperties") is False:
                lines += ["", "Other fields are refused."]
        else:
            lines.append(_schema_type(schema))
        lines.append("")
    return lines


def _operations(doc: dict[str, Any]):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in ("get", "put", "post", "delete", "patch", "head", "options"):
                yield method.upper(), path, op


def rest_operations() -> list[tuple[str, str]]:
    """(method, path) of every operation of the REST API."""
    return [(m, p) for m, p, _ in _operations(openapi_document())]


def rest_reference(doc: dict[str, Any] | None = None) -> str:
    doc = doc if doc is not None else openapi_document()
    info = doc.get("info", {})
    lines = [
        "# REST reference",
        "",
        f"Generated from the OpenAPI document of the REST API (`{info.get('title', '')}` "
        f"{info.get('version', '')}, OpenAPI {doc.get('openapi', '')}) when this site was built. A running",
        "server serves the same document at `/openapi.json` and Swagger UI at `/docs`. How to start it,",
        "tokens and examples: [REST API](../tasks/api.md).",
        "",
        _text(info.get("description", "")),
        "",
        "## Operations",
        "",
        "| method | path | what | auth | statuses |",
        "|---|---|---|---|---|",
    ]
    for method, path, op in _operations(doc):
        anchor = _slug(f"{method} {path}")
        auth = "bearer token" if op.get("security") else "none"
        statuses = ", ".join(sorted(op.get("responses", {})))
        lines.append(f"| {method} | [{_code(path)}](#{anchor}) | {_text(op.get('summary', ''))} | {auth} | {statuses} |")
    lines.append("")
    for method, path, op in _operations(doc):
        lines += [f"### {method} {_code(path)} {{#{_slug(f'{method} {path}')}}}", ""]
        if op.get("description"):
            lines += [_paragraphs(op["description"]), ""]
        params = op.get("parameters", [])
        if params:
            lines += ["| parameter | in | required | type | meaning |", "|---|---|---|---|---|"]
            for p in params:
                lines.append(f"| `{p['name']}` | {p.get('in', '')} | {'yes' if p.get('required') else 'no'} | "
                             f"{_schema_type(p.get('schema', {}))} | {_text(p.get('description', ''))} |")
            lines.append("")
        body = op.get("requestBody")
        if body:
            required = "required" if body.get("required") else "optional"
            lines += [f"Request body ({required}): {_body_schema(body.get('content', {}))}", ""]
        lines += ["| status | meaning | body |", "|---|---|---|"]
        for status, response in sorted(op.get("responses", {}).items()):
            lines.append(f"| {status} | {_text(response.get('description', ''))} | "
                         f"{_body_schema(response.get('content', {}))} |")
        lines.append("")
    schemes = doc.get("components", {}).get("securitySchemes", {})
    if schemes:
        lines += ["## Authentication", ""]
        for name, scheme in schemes.items():
            lines.append(f"- `{name}`: {scheme.get('type')} {scheme.get('scheme', '')}. "
                         f"{_text(scheme.get('description', ''))}")
        lines.append("")
    lines += ["## Schemas", ""] + _schema_sections(doc.get("components", {}).get("schemas", {}))
    return "\n".join(lines) + "\n"


# --- dataset spec ------------------------------------------------------------------------------

def spec_reference() -> str:
    from skiff.spec import DatasetSpec

    schema = DatasetSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    named = dict(schema.pop("$defs", {}))
    named[schema.get("title", "DatasetSpec")] = schema
    lines = [
        "# Dataset spec reference",
        "",
        "Generated from skiff's dataset spec model when this site was built: every field of a",
        "`datasets/<name>.yaml`, its type, default and meaning. A guided tour with examples:",
        "[dataset specs](../concepts/dataset-specs.md). Start at [DatasetSpec](#schema-datasetspec).",
        "",
    ]
    return "\n".join(lines + _schema_sections(named, level="##")) + "\n"


PAGES = {
    "reference/cli.md": cli_reference,
    "reference/configuration.md": config_reference,
    "reference/dataset-spec.md": spec_reference,
    "reference/rest.md": rest_reference,
}


# --- MkDocs hook -------------------------------------------------------------------------------

def on_files(files: Any, config: Any) -> Any:
    """Add the generated reference pages to the site (MkDocs ≥ 1.6 generated files)."""
    from mkdocs.structure.files import File

    for src_uri, render in PAGES.items():
        existing = files.get_file_from_path(src_uri)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, src_uri, content=render()))
    return files


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python docs/gen_ref.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    for src_uri, render in PAGES.items():
        target = out / src_uri
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(), encoding="utf-8")
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
