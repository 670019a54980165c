"""Small helpers shared by CLI commands."""
import json

import click

from mobilekit.io import write_atomic, write_json_atomic  # noqa: F401  (re-exported)


def echo_json(obj):
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def echo_next(command):
    """The natural next command (train -> export -> bench), on stderr so stdout stays data."""
    if command:
        click.echo(f"next: {command}", err=True)


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
