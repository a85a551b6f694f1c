"""The mail templates are checked when they are loaded, so an operator's typo stops the start, not a reply."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from omo_mailbot.cli import main
from omo_mailbot.errors import ConfigError
from omo_mailbot.templating import VARIABLES, Templates

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    copy = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", copy)
    return copy


def _problems(folder: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        Templates(folder)
    return [str(p) for p in err.value.problems]


def test_the_shipped_templates_pass_and_every_one_the_service_sends_is_checked():
    Templates(ROOT / "templates")
    shipped = {p.name for p in (ROOT / "templates").iterdir() if p.suffix in (".txt", ".html")}
    assert shipped == set(VARIABLES)


def test_a_template_that_does_not_compile_names_its_file_and_line(folder):
    path = folder / "acute_reply.nl.txt"
    path.write_text("Geachte heer, mevrouw,\n\nUw kenmerk: {{ reference }\n")
    assert _problems(folder) == [f"{path}:3: template does not compile: unexpected '}}'"]


def test_a_misspelt_variable_names_its_line_and_what_the_template_is_given(folder):
    path = folder / "preparation_ack.en.html"
    path.write_text("<p>Dear Sir or Madam,</p>\n<p>Reference: {{ refrence }}</p>\n")
    assert _problems(folder) == [
        f"{path}:2: unknown variable 'refrence'; this template is given: "
        "contact_day, name, next_working_day, our_address, reference"
    ]


def test_loop_variables_and_jinja_globals_are_not_unknown(folder):
    (folder / "command_reply.txt").write_text(
        "{% for r in results %}{{ loop.index }} {{ r.line }}{% endfor %}{% for i in range(done) %}.{% endfor %}\n"
    )
    Templates(folder)


def test_a_missing_template_is_named(folder):
    (folder / "duty_alert.txt").unlink()
    missing = folder / "duty_alert.txt"
    assert _problems(folder) == [f"{missing}: template missing: the service sends mail rendered from it"]


def test_the_service_does_not_start_on_a_broken_template_and_says_where(tmp_path, folder, capsys):
    (folder / "acute_reply.en.txt").write_text("Dear {{ nam }},\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[source]\nkind = "maildir"\nmaildir = "{ROOT / "sample" / "mailbox"}"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "omo.db"}"\n[paths]\ntemplates_dir = "{folder}"\n'
        f'rules_dir = "{ROOT / "rules"}"\n'
    )
    assert main(["--config", str(cfg), "db", "upgrade"]) == 0
    capsys.readouterr()
    assert main(["--config", str(cfg), "check-config"]) == 1
    assert f"{folder / 'acute_reply.en.txt'}:1: unknown variable 'nam'" in capsys.readouterr().err
    assert main(["--config", str(cfg), "run", "--once"]) == 2
    assert f"{folder / 'acute_reply.en.txt'}:1: unknown variable 'nam'" in capsys.readouterr().err


def test_a_renderer_that_leaves_out_a_declared_variable_is_caught_at_render():
    context = {"name": "x", "reference": "OMO-2026-0001", "next_working_day": "d", "our_address": "a@b.nl"}
    with pytest.raises(RuntimeError, match="contact_day"):
        Templates(ROOT / "templates").render_text("acute_reply.nl.txt", context)
    Templates(ROOT / "templates").render_text("acute_reply.nl.txt", {**context, "contact_day": "d", "extra": 1})
