"""The client as `pip install ./client` installs it (make venv / dev-venv do):
a `glassbox` command in the venv, and a package that needs neither Django
nor torch."""

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.client.conftest import CLIENT_DIR


def test_the_installed_glassbox_command_answers_help_with_the_exit_codes():
    command = Path(sys.executable).parent / "glassbox"
    assert command.exists(), f"{command} is missing: `make dev-venv` installs ./client into the venv"
    result = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "exit codes:" in result.stdout and "7   server unreachable" in result.stdout
    for group in ("rollout", "report", "audit"):
        sub = subprocess.run([str(command), group, "--help"], capture_output=True, text=True, timeout=60)
        assert sub.returncode == 0 and "exit codes:" in sub.stdout


def test_the_client_depends_on_an_http_client_only_and_imports_no_server_code():
    project = tomllib.loads((CLIENT_DIR / "pyproject.toml").read_text())["project"]
    assert project["name"] == "glassbox-client"
    assert project["dependencies"] == ["requests>=2.28,<3"]
    assert project["scripts"] == {"glassbox": "glassbox_client.cli:main"}
    probe = (
        "import sys, glassbox_client, glassbox_client.cli; "
        "print(sorted(m for m in ('django', 'torch', 'glassbox', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=CLIENT_DIR, env={"PATH": ""}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
