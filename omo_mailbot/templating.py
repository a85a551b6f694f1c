"""Rendering mail bodies from templates/ (the only importer of jinja2).

Two environments, as the Jinja docs advise for mail: HTML with autoescape on,
text with autoescape off; both with StrictUndefined so a typo fails at render
time (and in the tests), not in an official's inbox. Templates receive plain
dicts and strings only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2


class Templates:
    def __init__(self, directory: Path) -> None:
        if not directory.is_dir():
            from .errors import ConfigError, Problem

            raise ConfigError([Problem(str(directory), None, "paths.templates_dir", "templates directory not found")])
        loader = jinja2.FileSystemLoader(str(directory))
        self.text_env = jinja2.Environment(
            loader=loader, autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
        )
        self.html_env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
        self.directory = directory

    def render_text(self, name: str, context: dict[str, Any]) -> str:
        return self.text_env.get_template(name).render(**context)

    def render_html(self, name: str, context: dict[str, Any]) -> str:
        return self.html_env.get_template(name).render(**context)

    def exists(self, name: str) -> bool:
        return (self.directory / name).is_file()
