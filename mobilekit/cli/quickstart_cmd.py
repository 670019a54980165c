"""`mobilekit quickstart`: the README's main job."""
import click


@click.command()
@click.option("--model", default="mobilenet_v1", help="Zoo classifier to train.")
@click.option("--alpha", type=float, default=0.75, help="Width multiplier.")
@click.option("--epochs", type=int, default=3, help="Training epochs (short schedule).")
@click.option("--resolution", type=int, default=None, show_default="training default (64 on synthetic)",
              help="Square input size.")
@click.option("--data", default="synthetic", help="Dataset spec (see `mobilekit train --help`).")
@click.option("--batch-size", type=int, default=None, show_default="training default")
@click.option("--threads", type=int, default=1, help="Benchmark threads (XNNPACK).")
@click.option("--num-runs", type=int, default=50, help="Minimum timed runs per benchmark.")
@click.option("--out", type=click.Path(), default=None, show_default="runs/train/quickstart-<model>[-N]",
              help="Run directory.")
def quickstart(model, alpha, epochs, resolution, data, batch_size, threads, num_runs, out):
    """Train, export fp32 + int8, evaluate and benchmark on the host, then print one table.

    \b
    Examples:
      mobilekit quickstart
      mobilekit quickstart --model mobilenet_v2 --alpha 0.35 --epochs 2 --out runs/qs
    """
    from mobilekit.quickstart import run

    from mobilekit.cli.common import echo_next

    run(model=model, alpha=alpha, epochs=epochs, resolution=resolution, data=data,
        batch_size=batch_size, threads=threads, out=out, num_runs=num_runs, log=click.echo)
    echo_next(f"mobilekit train --model {model} --weights imagenet --freeze-epochs 2 "
              "--data ./your_photos  (one folder per class)")
