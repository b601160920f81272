"""Reading YAML that users write (dataset specs, skiff.yaml, GitOps environment files, policies).

One loader, :func:`load_user_yaml`, for every such file:

- **No anchors or aliases.** A few nested aliases expand to millions of nodes (a 2.6 KB "billion
  laughs" spec grew a process by 240 MB); a user file never needs them, so the first anchor or alias
  is refused while the document is composed, before anything is expanded. Merge keys (``<<: *x``)
  are aliases too: write the keys out.
- **One-line errors that never quote the file.** A YAML error names ``file:line:column`` and the
  problem (PyYAML's own message quotes the offending line, which may hold a secret); quoted
  fragments longer than a character are elided for the same reason.
- Safe construction only (``yaml.SafeLoader``): no Python objects, no custom tags.

Round-trip editors (ruamel.yaml in :mod:`serving.deploy.gitops`) call :func:`load_user_yaml` on the text
first, so the same rules and messages hold before they parse it their way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Protocol

import yaml

from skiff.errors import SkiffError, SpecError

__all__ = ["load_user_yaml", "read_user_text"]

_QUOTED = re.compile(r"'([^']*)'")
#: what PyYAML quotes that is not the file's text: one character, an escape, a token name
_HARMLESS = re.compile(r"^(.|\\\w|\\x[0-9a-fA-F]{2}|<[a-z ]+>)$")


class _Position(Protocol):
    """Where in the text (PyYAML's pure and C marks both have these)."""

    line: int
    column: int


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases before composing the node they name."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise _AliasRefused("an alias (*name)", self._next_event().start_mark)
        event = self._next_event()
        if getattr(event, "anchor", None) is not None:
            raise _AliasRefused("an anchor (&name)", event.start_mark)
        return super().compose_node(parent, index)

    def _next_event(self) -> yaml.Event:
        # types-PyYAML leaves Parser.peek_event unannotated; while a node is composed it is the next event
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        return event


class _AliasRefused(Exception):
    def __init__(self, what: str, mark: _Position | None) -> None:
        super().__init__(what)
        self.what = what
        self.mark = mark


def _where(origin: str, mark: _Position | None) -> str:
    return f"{origin}:{mark.line + 1}:{mark.column + 1}" if mark is not None else origin


def _problem(e: yaml.YAMLError) -> str:
    parts = [p for p in (getattr(e, "context", None), getattr(e, "problem", None)) if p]
    text = ": ".join(parts) if parts else type(e).__name__
    # keep single characters ("found character '\t'"), never longer fragments of the file
    return _QUOTED.sub(lambda m: m.group(0) if _HARMLESS.match(m.group(1)) else "'…'", " ".join(text.split()))


def read_user_text(path: str | Path, what: str, *, error: type[SkiffError] = SpecError) -> str:
    """A user file's text; a missing or unreadable file is ``error`` naming the file (never its content)."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise error(f"{what} not found: {p}", path=str(p)) from e
    except IsADirectoryError as e:
        raise error(f"{p}: {what} is a folder, not a file", path=str(p)) from e
    except UnicodeDecodeError as e:
        raise error(f"{p}: {what} is not UTF-8 text (byte {e.start}); save it as UTF-8", path=str(p)) from e
    except OSError as e:
        raise error(f"{p}: cannot read {what}: {e.strerror}", path=str(p)) from e


def load_user_yaml(
    source: str | Path,
    what: str,
    *,
    origin: str | None = None,
    error: type[SkiffError] = SpecError,
) -> Any:
    """Parse a user's YAML: ``source`` is a :class:`~pathlib.Path` (read here) or the text itself.

    ``what`` names the document in messages ("dataset spec", "settings file"); ``origin`` names the
    text's file when ``source`` is text. Problems raise ``error`` with a one-line message naming
    ``origin:line:column`` and the fix.
    """
    if isinstance(source, Path):
        origin = origin or str(source)
        text = read_user_text(source, what, error=error)
    else:
        origin = origin or f"<{what}>"
        text = source
    # `from None` below: PyYAML's exceptions quote the offending line, which must reach no message or log
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except _AliasRefused as e:
        raise error(f"{_where(origin, e.mark)}: {what} uses {e.what}; YAML anchors, aliases and merge keys "
                    "are not accepted: write the values out", path=origin) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise error(f"{_where(origin, mark)}: {what} is not valid YAML: {_problem(e)}; fix the file at that "
                    "position", path=origin) from None
    except yaml.reader.ReaderError as e:
        raise error(f"{origin}: {what} holds a character YAML does not allow (offset {e.position}); remove it "
                    "or write it as an escape in a double-quoted string", path=origin) from None
    except yaml.YAMLError as e:
        raise error(f"{origin}: {what} is not valid YAML: {_problem(e)}", path=origin) from None
