"""The `mobilekit` command: a thin click layer over the library.

Each command lives in its own module and is imported only when invoked, so
`mobilekit --help` and `mobilekit bench-parse` stay fast (no TensorFlow import).
"""
import importlib
import sys

import click

from mobilekit import quiet

# command name -> "module:function" (one line per command; keep sorted by name).
COMMANDS = {
    "bench": "mobilekit.cli.bench_cmds:bench",
    "bench-compare": "mobilekit.cli.bench_compare:bench_compare",
    "bench-parse": "mobilekit.cli.bench_parse:bench_parse",
    "compress": "mobilekit.cli.compress_cmds:compress",
    "data": "mobilekit.cli.train_cmds:data",
    "delegates": "mobilekit.cli.delegates_cmd:delegates",
    "detect": "mobilekit.cli.detect_cmds:detect",
    "eval": "mobilekit.cli.train_cmds:eval_cmd",
    "eval-detector": "mobilekit.cli.detect_cmds:eval_detector",
    "export": "mobilekit.cli.export_cmds:export",
    "latency-model": "mobilekit.cli.search_cmds:latency_model",
    "models": "mobilekit.cli.zoo_cmds:models",
    "profile": "mobilekit.cli.zoo_cmds:profile",
    "quant-doctor": "mobilekit.cli.doctor_cmd:quant_doctor",
    "quickstart": "mobilekit.cli.quickstart_cmd:quickstart",
    "search": "mobilekit.cli.search_cmds:search",
    "train": "mobilekit.cli.train_cmds:train",
}


class MobilekitGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            # Bad input: one line, exit code 2, no traceback.
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=MobilekitGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                    "show_default": True})
@click.version_option(package_name="mobilekit")
@click.option("--verbose", is_flag=True, default=False, is_eager=True, expose_value=False,
              callback=lambda ctx, param, value: value and quiet.set_verbose(),
              help="Show TensorFlow, absl, XLA and converter logs (also MOBILEKIT_VERBOSE=1).")
def cli():
    """mobilekit: mobile vision models from design to a measured latency.

    \b
    Examples:
      mobilekit models
      mobilekit profile --model mobilenet_v1 --alpha 0.75 --resolution 160
      mobilekit profile --model efficientnet_b2 --json
      mobilekit --verbose export runs/train/mobilenet_v1_0.75 --quant int8
    """


def main(argv=None):
    quiet.install()
    try:
        cli.main(args=argv, prog_name="mobilekit", standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
