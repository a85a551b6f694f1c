"""The systemd unit and the Dockerfile: what can be checked without systemd running or a Docker engine."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT

UNIT = ROOT / "deploy" / "omo-mailbot.service"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_is_a_notify_service_with_watchdog_restart_config_check_and_hardening():
    service = _unit()["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) >= 60
    assert service["Restart"] == "on-failure"
    # a configuration error must end the unit, not loop: only the main process's exit code 2 is honoured
    assert "ExecStartPre" not in service
    assert "2" in service["RestartPreventExitStatus"].split()
    assert service["ExecStart"].endswith(" run")
    assert service["KillSignal"] == "SIGTERM"
    assert "EnvironmentFile" in service or "LoadCredential" in service
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "RestrictAddressFamilies"):
        assert key in service
    assert service["User"] != "root"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_every_key_of_the_unit(tmp_path: Path):
    omo = ROOT / ".venv" / "bin" / "omo-mailbot"
    unit = tmp_path / "omo-mailbot.service"
    unit.write_text(UNIT.read_text().replace("/opt/omo-mailbot/.venv/bin/omo-mailbot", str(omo)))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Unknown" not in out.stderr and "ignoring" not in out.stderr, out.stderr


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            joined.append(pending.strip())
            pending = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in joined]


def test_dockerfile_builds_in_two_stages_from_python_311_slim_and_runs_as_a_user():
    instructions = _instructions()
    froms = [args for op, args in instructions if op == "FROM"]
    assert len(froms) == 2 and all(f.startswith("python:3.11-slim") for f in froms)
    final = instructions[[i for i, (op, _) in enumerate(instructions) if op == "FROM"][-1] :]
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(op == "HEALTHCHECK" and "/healthz" in args for op, args in final)
    assert any(op == "COPY" and args.startswith("--from=build") for op, args in final)


def test_every_path_the_dockerfile_copies_exists_in_the_repository():
    copies = [args.split() for op, args in _instructions() if op == "COPY" and not args.startswith("--from")]
    assert copies
    for words in copies:
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
