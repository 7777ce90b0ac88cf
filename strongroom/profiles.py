"""Named CLI profiles: the gateway URL and the credential `strongroom account login` stored, one
0600 JSON file per profile in the user's config directory (platformdirs; `STRONGROOM_CONFIG_DIR`
overrides it). A token from `--token` or `STRONGROOM_TOKEN` always wins over a profile's."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs

DEFAULT_PROFILE = "default"
ENV_CONFIG_DIR = "STRONGROOM_CONFIG_DIR"
ENV_PROFILE = "STRONGROOM_PROFILE"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ProfileError(ValueError):
    """A profile name that cannot be a file name, or a profile file that cannot be read."""


def config_dir(environ: Mapping[str, str]) -> Path:
    return Path(environ.get(ENV_CONFIG_DIR) or platformdirs.user_config_dir("strongroom"))


def profile_path(environ: Mapping[str, str], name: str) -> Path:
    if not _NAME.match(name):
        raise ProfileError(f"--profile: {name!r} is not a profile name (letters, digits, '_', '.', '-')")
    return config_dir(environ) / "profiles" / f"{name}.json"


def load(environ: Mapping[str, str], name: str) -> dict[str, Any]:
    """The profile's fields, or {} if it was never written."""
    path = profile_path(environ, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ProfileError(f"cannot read profile {name} ({path}): {exc}") from None
    return data if isinstance(data, dict) else {}


def save(environ: Mapping[str, str], name: str, fields: Mapping[str, Any]) -> Path:
    """Writes the profile atomically; the file is 0600 from its creation (it holds a credential)."""
    path = profile_path(environ, name)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(dict(fields), handle, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def forget_token(environ: Mapping[str, str], name: str) -> None:
    """After a logout: the profile keeps its URL and tenant, not the ended session."""
    fields = load(environ, name)
    if fields.pop("token", None) is not None:
        save(environ, name, fields)
