"""`mobilekit models` and `mobilekit profile`."""
import click

from mobilekit.cli.common import echo_json, input_size_option, parse_model_kwargs
from mobilekit.report.tables import format_table


@click.command()
@click.option("--task", type=click.Choice(["classification", "detection"]), default=None,
              help="Only models of this task.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(task, as_json):
    """List the zoo: name, family, default input, params and MACs (counted by building each
    model at its default size) and the published top-1 from its model card.

    \b
    Examples:
      mobilekit models
      mobilekit models --json
    """
    from mobilekit.zoo.registry import get_card, get_entry, list_models
    from mobilekit.zoo.summary import count_default

    rows = []
    names = list_models(task)
    for i, name in enumerate(names, 1):
        click.echo(f"[{i}/{len(names)}] counting {name}...", err=True)
        entry = get_entry(name)
        params, macs = count_default(name)
        card = get_card(name)
        rows.append({"name": name, "family": entry.family,
                     "input": f"{entry.default_resolution}x{entry.default_resolution}",
                     "params": params, "macs": macs,
                     "published_top1": card.get("top1")})
    if as_json:
        echo_json(rows)
        return
    click.echo(format_table(
        ["model", "family", "input", "params (M)", "MACs (M)", "published top-1"],
        [[r["name"], r["family"], r["input"], f"{r['params'] / 1e6:.2f}",
          f"{r['macs'] / 1e6:.1f}", "-" if r["published_top1"] is None else f"{r['published_top1']}"]
         for r in rows]))


@click.command()
@click.option("--model", "model_name", required=True, help="Zoo model name (see `mobilekit models`).")
@click.option("--alpha", type=float, default=None, help="Width multiplier (default: the model's).")
@click.option("--resolution", type=int, default=None,
              help="Square input size in pixels (default: the model's).")
@input_size_option()
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Extra model argument, e.g. --option minimalistic=true or "
                   "input_shape=480,640,3 (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the full profile as JSON.")
@click.option("--layers/--no-layers", "show_layers", default=True,
              help="Show the per-layer table (text output).")
def profile(model_name, alpha, resolution, input_size, options, as_json, show_layers):
    """Count params, MACs, activations and memory traffic per layer.

    \b
    Examples:
      mobilekit profile --model mobilenet_v1 --alpha 0.75 --resolution 160
      mobilekit profile --model efficientnet_b2 --json
      mobilekit profile --model faceboxes --input-size 640x480 --no-layers
      mobilekit profile --model mobilenet_v3_small --option minimalistic=true --no-layers
    """
    from mobilekit.profile import profile_model
    from mobilekit.zoo.registry import create_model

    kwargs = parse_model_kwargs(alpha, resolution, options, input_size)
    result = profile_model(create_model(model_name, **kwargs), name=model_name)
    result["arguments"] = kwargs
    from mobilekit.zoo.summary import task_extras

    result.update(task_extras(model_name, kwargs))
    if as_json:
        echo_json(result)
        return
    if show_layers:
        click.echo(format_table(
            ["layer", "type", "output", "params", "MACs", "activations", "mem access"],
            [[r["name"], r["type"], "x".join(str(d) for d in r["output_shape"])
              if r["output_shape"] and not isinstance(r["output_shape"][0], list) else str(r["output_shape"]),
              f"{r['params']:,}", f"{r['macs']:,}", f"{r['activations']:,}",
              f"{r['memory_access']:,}"] for r in result["layers"]]))
        click.echo("")
    click.echo(f"model:            {model_name} {kwargs or ''}")
    click.echo(f"input:            {'x'.join(str(d) for d in result['input_shape'])}")
    click.echo(f"params:           {result['params']:,} (trainable {result['trainable_params']:,})")
    click.echo(f"MACs:             {result['macs']:,} ({result['macs'] / 1e6:.1f} M)")
    click.echo(f"activations:      {result['activations']:,}")
    click.echo(f"memory access:    {result['memory_access']:,} elements")
    click.echo(f"receptive field:  {result['receptive_field']} px, output stride {result['output_stride']}")
    for key, value in result.items():
        if key not in ("layers", "arguments", "model", "input_shape", "params", "trainable_params",
                       "non_trainable_params", "macs", "activations", "memory_access",
                       "receptive_field", "output_stride"):
            click.echo(f"{key + ':':<18}{value}")
