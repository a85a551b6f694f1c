"""Rendering mail bodies from templates/ (the only importer of jinja2).

Two environments, as the Jinja docs advise for mail: HTML with autoescape on,
text with autoescape off; both with StrictUndefined so a typo fails at render
time (and in the tests), not in an official's inbox. Templates receive plain
dicts and strings only.

Every template the service sends is checked when the folder is loaded (at
start-up and by ``check-config``): it must exist, compile, and use only the
variables its rendering code supplies (``VARIABLES``). An operator's typo thus
stops the start with its file and line instead of turning each acute mail into
an error case without an answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes

from .errors import ConfigError, Problem

_REPLY = frozenset({"name", "reference", "contact_day", "next_working_day", "our_address"})
_DIGEST = frozenset(
    {
        "person",
        "day",
        "period",
        "acute_period",
        "counts",
        "mine",
        "new_count",
        "unassigned",
        "acute",
        "stale",
        "stale_after",
        "needs_human",
        "failed",
        "our_address",
    }
)

#: Each template the service renders, with the variables its rendering code passes in.
VARIABLES: dict[str, frozenset[str]] = {
    **{
        f"{kind}.{lang}.{ext}": _REPLY
        for kind in ("acute_reply", "preparation_ack")
        for lang in ("nl", "en")
        for ext in ("txt", "html")
    },
    "duty_alert.txt": frozenset(
        {"reference", "received", "sender", "subject", "score", "threshold", "hits", "sent", "excerpt"}
    ),
    "command_reply.txt": frozenset({"name", "results", "done", "refused"}),
    "digest.txt": _DIGEST,
    "digest.html": _DIGEST,
}


class Templates:
    def __init__(self, directory: Path) -> None:
        if not directory.is_dir():
            raise ConfigError([Problem(str(directory), None, "paths.templates_dir", "templates directory not found")])
        loader = jinja2.FileSystemLoader(str(directory))
        self.text_env = jinja2.Environment(
            loader=loader, autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
        )
        self.html_env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
        self.directory = directory
        problems = [p for name, given in VARIABLES.items() for p in self._check(name, given)]
        if problems:
            raise ConfigError(problems)

    def render_text(self, name: str, context: dict[str, Any]) -> str:
        _given_as_declared(name, context)
        return self.text_env.get_template(name).render(**context)

    def render_html(self, name: str, context: dict[str, Any]) -> str:
        _given_as_declared(name, context)
        return self.html_env.get_template(name).render(**context)

    def preload(self) -> None:
        """Compile every template the service renders that exists, so that the first mail does not pay for it."""
        for name in VARIABLES:
            if self.exists(name):
                (self.html_env if name.endswith(".html") else self.text_env).get_template(name)

    def exists(self, name: str) -> bool:
        return (self.directory / name).is_file()

    def _check(self, name: str, given: frozenset[str]) -> list[Problem]:
        """Why ``name`` cannot be rendered with the variables ``given``: missing, not compiling, or unknown names."""
        path = self.directory / name
        if not path.is_file():
            return [Problem(str(path), None, "", "template missing: the service sends mail rendered from it")]
        env = self.html_env if name.endswith(".html") else self.text_env
        try:
            tree = env.parse(path.read_text(encoding="utf-8"), name, str(path))
        except jinja2.TemplateSyntaxError as exc:
            return [Problem(str(path), exc.lineno, "", f"template does not compile: {exc.message}")]
        except UnicodeDecodeError as exc:
            return [Problem(str(path), None, "", f"template is not UTF-8: {exc.reason}")]
        unknown = jinja2.meta.find_undeclared_variables(tree) - given - set(env.globals)
        if not unknown:
            return []
        first_line: dict[str, int] = {}
        for node in tree.find_all(jinja2.nodes.Name):
            first_line.setdefault(node.name, node.lineno)
        offered = ", ".join(sorted(given))
        return [
            Problem(str(path), first_line.get(var), "", f"unknown variable {var!r}; this template is given: {offered}")
            for var in sorted(unknown)
        ]


def _given_as_declared(name: str, context: dict[str, Any]) -> None:
    """The load-time check promises that a template using only ``VARIABLES`` renders: a renderer that leaves
    one of them out breaks that promise, and is a bug here (an extra key is harmless)."""
    declared = VARIABLES.get(name)
    if declared is not None and not declared <= context.keys():
        missing = sorted(declared - context.keys())
        raise RuntimeError(f"{name}: rendered without {missing}, which VARIABLES declares")
