"""The settings' files: where the project lives, and the YAML layers merged in order.

``config/defaults.yaml``, ``config/profiles/<profile>.yaml``, then the files named in
``$PROPENSITY_CONFIG_OVERLAY``, deep-merged by :func:`merge_layers`, except the blocks of
:data:`REPLACED_WHOLE` (a source's column mapping), which the last layer giving them replaces.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, YamlConfigSettingsSource


def project_home() -> Path:
    """The repository root: ``PROPENSITY_HOME`` or the folder holding ``config/defaults.yaml``."""
    env = os.environ.get("PROPENSITY_HOME")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "config" / "defaults.yaml").is_file():
            return parent
    return Path.cwd()


def resolve_path(value: str) -> str:
    """Make a relative local path absolute against the project home; URIs pass through."""
    if "://" in value:
        return value
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (project_home() / p).resolve())


def config_dir() -> Path:
    return Path(os.environ.get("PROPENSITY_CONFIG_DIR", project_home() / "config"))


def yaml_source(
    settings_cls: type[BaseSettings], folder: Path, *, overlays: bool = True
) -> PydanticBaseSettingsSource:
    """``defaults.yaml``, then ``profiles/<profile>.yaml``, then each file of
    ``$PROPENSITY_CONFIG_OVERLAY`` (``os.pathsep``-separated; skipped when ``overlays`` is off),
    deep-merged in that order. The profile is ``$PROPENSITY_PROFILE`` or the defaults' ``profile:``.
    """
    defaults = folder / "defaults.yaml"
    if not defaults.is_file():
        raise FileNotFoundError(f"settings file missing: {defaults}")
    profile = os.environ.get("PROPENSITY_PROFILE") or (yaml.safe_load(defaults.read_text()) or {}).get(
        "profile", "local"
    )
    profile_file = folder / "profiles" / f"{profile}.yaml"
    if not profile_file.is_file():
        raise FileNotFoundError(f"unknown profile {profile!r}: {profile_file} does not exist")
    files = [defaults, profile_file]
    for name in (os.environ.get(OVERLAY_ENV, "") if overlays else "").split(os.pathsep):
        if name.strip():
            overlay = Path(resolve_path(name.strip()))
            if not overlay.is_file():
                raise FileNotFoundError(f"{OVERLAY_ENV} names {overlay}, which does not exist")
            files.append(overlay)
    return _ProfileYaml(settings_cls, profile, files)


OVERLAY_ENV = "PROPENSITY_CONFIG_OVERLAY"
# Settings replaced whole by a later layer that gives them, never merged key by key: a user's
# column mapping must not inherit another dataset's columns from the defaults.
REPLACED_WHOLE = (("source", "mapping"),)


def merge_layers(base: dict[str, Any], over: dict[str, Any], path: tuple[str, ...] = ()) -> dict[str, Any]:
    """``over`` deep-merged onto ``base``, except the :data:`REPLACED_WHOLE` blocks it gives."""
    out = dict(base)
    for key, value in over.items():
        here = (*path, key)
        if isinstance(value, dict) and isinstance(out.get(key), dict) and here not in REPLACED_WHOLE:
            out[key] = merge_layers(out[key], value, here)
        else:
            out[key] = value
    return out


def _given(data: dict[str, Any], path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True


def _without(data: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    if len(path) == 1:
        return {k: v for k, v in data.items() if k != path[0]}
    head = data.get(path[0])
    if not isinstance(head, dict):
        return data
    return data | {path[0]: _without(head, path[1:])}


class _ProfileYaml(YamlConfigSettingsSource):
    """The YAML files of one profile; ``profile`` is the one they were chosen for.

    Files merge by :func:`merge_layers`. A block of :data:`REPLACED_WHOLE` given as keyword
    arguments (``Settings(source={"mapping": {...}})``, ``committed_settings``) replaces the
    files' block too; environment variables still set single keys of it.
    """

    def __init__(self, settings_cls: type[BaseSettings], profile: str, files: list[Path]) -> None:
        self.profile = profile
        self.files = files
        super().__init__(settings_cls, yaml_file=files, deep_merge=True)

    def _read_files(self, files: Any, deep_merge: bool = False) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for file in self.files:
            merged = merge_layers(merged, yaml.safe_load(Path(file).read_text(encoding="utf-8")) or {})
        return merged

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        init = (getattr(self, "_settings_sources_data", None) or {}).get("InitSettingsSource") or {}
        for path in REPLACED_WHOLE:
            if _given(init, path):
                data = _without(data, path)
        return data | {"profile": self.profile}
