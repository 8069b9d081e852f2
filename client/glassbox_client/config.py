"""Where the `glassbox` command keeps the server URL and the API token:
`~/.config/glassbox/config.json` (or $GLASSBOX_CONFIG), readable by its
owner only. GLASSBOX_URL and GLASSBOX_TOKEN override what it holds."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError


@dataclass(frozen=True)
class Settings:
    url: str | None
    token: str | None
    path: Path


def config_path() -> Path:
    if os.environ.get("GLASSBOX_CONFIG"):
        return Path(os.environ["GLASSBOX_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "glassbox" / "config.json"


def _check_private(path: Path) -> None:
    """A token file others can read is a token others have: refuse it, with the fix."""
    if os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path} holds your API token but other users may read it (mode {mode:04o}); fix it with: chmod 600 {path}"
        )


def read_config(path: Path | None = None) -> dict:
    path = path or config_path()
    if not path.exists():
        return {}
    _check_private(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc} (run glassbox login again, or delete it)") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object (run glassbox login again, or delete it)")
    return data


def write_config(data: dict, path: Path | None = None) -> Path:
    """Write atomically, created 0600 (never briefly readable by others)."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle, temporary = tempfile.mkstemp(prefix=".config-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            os.chmod(temporary, 0o600)
            json.dump(data, out, indent=2)
            out.write("\n")
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def current_settings() -> Settings:
    """URL and token: the environment first, then the config file. The file
    is read (and its permissions checked) only when the environment leaves
    something unset."""
    path = config_path()
    url = os.environ.get("GLASSBOX_URL") or None
    token = os.environ.get("GLASSBOX_TOKEN") or None
    if url is None or token is None:
        stored = read_config(path)
        url = url or stored.get("url")
        token = token or stored.get("token")
    return Settings(url=url, token=token, path=path)
