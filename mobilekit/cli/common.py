"""Small helpers shared by CLI commands."""
import json
import os
import tempfile
from pathlib import Path

import click


def echo_json(obj):
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def write_atomic(path, text, mode="w"):
    """Write a file so that readers never see it half-written (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path, obj):
    return write_atomic(path, json.dumps(obj, indent=2) + "\n")


def parse_model_kwargs(alpha=None, resolution=None, options=()):
    """Collect --alpha/--resolution/--option key=value into create_model kwargs."""
    kwargs = {}
    if alpha is not None:
        kwargs["alpha"] = alpha
    if resolution is not None:
        kwargs["resolution"] = resolution
    for item in options:
        if "=" not in item:
            raise ValueError(f"--option must look like key=value; got {item!r}")
        key, value = item.split("=", 1)
        kwargs[key.strip()] = _parse_value(value.strip())
    return kwargs


def _parse_value(text):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
