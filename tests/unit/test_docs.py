"""The documentation: the README stays short and its links resolve, the commands the docs show exist
with the options they use, and the site builds with --strict, offline, with a CLI reference that lists
every command and a REST reference that lists every operation of the API."""

from __future__ import annotations

import html
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def _relative_links(path: Path) -> list[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))  # links inside code blocks are not links
    return [t for t in _LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:|^#", t)]


def _cli_tree() -> dict[str, set[str]]:
    """Every command path of the typer app with the options it accepts (its own and the root's)."""
    from skiff.cli import app

    root = typer.main.get_command(app)
    root_opts = {o for p in root.params for o in [*p.opts, *getattr(p, "secondary_opts", [])]} | {"-h", "--help"}
    tree: dict[str, set[str]] = {}

    def walk(command, path):
        opts = {o for p in command.params for o in [*p.opts, *getattr(p, "secondary_opts", [])]}
        tree[" ".join(path)] = opts | root_opts
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(root, ["skiff"])
    return tree


def test_readme_is_at_most_150_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("name", ["README.md", "SECURITY.md"])
def test_relative_links_resolve_to_files(name):
    path = ROOT / name
    broken = [t for t in _relative_links(path) if not (path.parent / t.split("#", 1)[0]).exists()]
    assert not broken, f"{name}: links to missing files: {broken}"


def test_link_finder_sees_links():
    # the check above must not pass because it finds nothing
    links = _relative_links(ROOT / "README.md")
    assert "docs/getting-started.md" in links and all(not t.startswith("http") for t in links)


def _shown_commands() -> list[tuple[str, int, list[str]]]:
    """(file, line, argv) of every `skiff ...` line in a bash block of the README and the docs."""
    found = []
    for path in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for m in _FENCE.finditer(text):
            if m.group(1) not in ("bash", "sh", "console"):
                continue
            first = text[: m.start(2)].count("\n") + 1
            for offset, line in enumerate(m.group(2).replace("\\\n", " ").splitlines()):
                line = line.split(" # ", 1)[0].split("  #", 1)[0].strip()
                if not line.startswith("skiff "):
                    continue
                line = re.sub(r"\[[^\]]*\]", "", line)  # optional parts written as [--flag X]
                try:
                    argv = shlex.split(line.split(" < ", 1)[0].split(" && ", 1)[0])
                except ValueError:
                    argv = line.split()
                found.append((str(path.relative_to(ROOT)), first + offset, argv))
    return found


def test_commands_shown_in_the_docs_exist_with_their_options():
    tree = _cli_tree()
    shown = _shown_commands()
    assert len(shown) > 40  # the README and task pages show dozens; finding none would prove nothing
    problems = []
    for where, line, argv in shown:
        path = ["skiff"]
        for word in argv[1:]:
            alternatives = word.split("|")  # `skiff rollout promote|rollback`
            if all(" ".join([*path, a]) in tree for a in alternatives):
                path.append(alternatives[0])
            else:
                break
        command = " ".join(path)
        if command == "skiff":
            problems.append(f"{where}:{line}: no such command: {' '.join(argv)}")
            continue
        for word in argv[len(path):]:
            option = word.split("=", 1)[0]
            if option.startswith("-") and option != "-" and option not in tree[command]:
                problems.append(f"{where}:{line}: `{command}` has no option {option}")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_site_builds_strict_offline_with_complete_references():
    from skiff.api import create_app
    from skiff.api.auth import TokenSet
    from skiff.config import Settings

    with tempfile.TemporaryDirectory() as out:
        site = Path(out) / "site"
        build = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
            cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        )
        assert build.returncode == 0, build.stdout + build.stderr

        cli = html.unescape((site / "reference" / "cli.html").read_text(encoding="utf-8"))
        headings = set(re.findall(r"<h2 id=\"[^\"]*\">([^<]+)<", cli))
        missing = sorted(set(_cli_tree()) - headings)
        assert not missing, f"commands missing from the CLI reference: {missing}"

        with tempfile.TemporaryDirectory() as root:
            doc = create_app(Settings(root=root), tokens=TokenSet(admin=frozenset({"0" * 64})),
                             environments=root).openapi()
        rest = html.unescape((site / "reference" / "rest.html").read_text(encoding="utf-8"))
        operations = set(re.findall(r"<h3 id=\"[^\"]*\">([A-Z]+) <code>([^<]+)</code>", rest))
        expected = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
        assert expected and not expected - operations, f"missing from the REST reference: {expected - operations}"

        config = (site / "reference" / "configuration.html").read_text(encoding="utf-8")
        assert all(f"<code>{field}</code>" in config for field in Settings.model_fields)

        security = (site / "security.html").read_text(encoding="utf-8")
        assert "Reporting a vulnerability" in security  # SECURITY.md is included, not copied

        pages = list(site.rglob("*.html"))
        assert len(pages) > 20
        external = {
            f"{p.relative_to(site)}: {m}"
            for p in pages
            for m in re.findall(r"<(?:script|link)[^>]+(?:src|href)=\"(https?://[^\"]+)\"", p.read_text(encoding="utf-8"))
        }
        assert not external, f"the site must work offline; external scripts or styles: {sorted(external)}"
