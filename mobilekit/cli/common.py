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


# One convention everywhere: --input-size is WIDTH x HEIGHT, as camera modes are written
# (640x480 = a landscape VGA frame = input_shape (480, 640, 3), height first like NHWC).
INPUT_SIZE_HELP = ("Input WIDTHxHEIGHT in pixels (width first, as camera modes are written: "
                   "640x480 is a landscape VGA frame, input_shape (480, 640, 3)).")


def input_size_option(show_default="the model's input size", help_text=INPUT_SIZE_HELP):
    """The shared --input-size WxH option (parsed to (height, width) or None)."""
    return click.option("--input-size", "input_size", default=None, metavar="WxH",
                        callback=lambda ctx, param, value: parse_input_size(value),
                        show_default=show_default, help=help_text)


def parse_input_size(text):
    """'640x480' (width x height) -> (480, 640); None stays None. Bad text -> UsageError."""
    if text is None:
        return None
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise click.UsageError(f"--input-size must be WIDTHxHEIGHT in pixels, e.g. 640x480; "
                               f"got {text!r}") from None
    if width < 1 or height < 1:
        raise click.UsageError(f"--input-size sides must be positive; got {text!r}")
    return height, width


def parse_model_kwargs(alpha=None, resolution=None, options=(), input_size=None):
    """Collect --alpha/--resolution/--input-size (height, width)/--option key=value into
    create_model kwargs (--input-size gives input_shape (height, width, 3))."""
    kwargs = {}
    if alpha is not None:
        kwargs["alpha"] = alpha
    if resolution is not None and input_size is not None:
        raise click.UsageError("give either --resolution (square) or --input-size WxH, not both")
    if resolution is not None:
        kwargs["resolution"] = resolution
    if input_size is not None:
        kwargs["input_shape"] = (int(input_size[0]), int(input_size[1]), 3)
    for item in options:
        if "=" not in item:
            raise ValueError(f"--option must look like key=value; got {item!r}")
        key, value = item.split("=", 1)
        kwargs[key.strip()] = _parse_value(value.strip())
    return kwargs


def _parse_value(text):
    """true/false/none, int, float, a tuple of those ('480,640,3', '(480, 640, 3)',
    '[1,2]'), else the text itself."""
    if "," in text:
        inner = text.strip("()[] ")
        return tuple(_parse_value(part.strip()) for part in inner.split(",") if part.strip())
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
