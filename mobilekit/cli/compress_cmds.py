"""`mobilekit compress prune | channel-prune | svd`: compress a training run and fine-tune it."""
import click

from mobilekit.cli.common import echo_json

_RUN_LR = "0.3 x the run's learning rate"


def _common(fn):
    """Options every compression command shares (fine-tuning and output)."""
    options = [
        click.option("--epochs", type=int, default=2, help="Fine-tuning epochs on the run's data."),
        click.option("--lr", type=float, default=None, show_default=_RUN_LR,
                     help="Peak fine-tuning learning rate (cosine decay to 0)."),
        click.option("--batch-size", type=int, default=None, show_default="the run's",
                     help="Fine-tuning batch size."),
        click.option("--precise-bn", type=int, default=20,
                     help="Training batches averaged into BatchNorm statistics after "
                          "fine-tuning (0: off)."),
        click.option("--out", type=click.Path(file_okay=False), default=None,
                     show_default="RUN_DIR-<method>[-N] beside RUN_DIR",
                     help="Run directory to write (must be new or empty)."),
        click.option("--json", "as_json", is_flag=True, default=False,
                     help="Print metrics.json instead of a summary."),
        click.option("--verbose", is_flag=True, default=False, help="Show Keras progress."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _job_kwargs(epochs, lr, batch_size, precise_bn, out, verbose):
    return {"epochs": epochs, "lr": lr, "batch_size": batch_size, "precise_bn": precise_bn,
            "out": out, "verbose": 2 if verbose else 0}


@click.group()
def compress():
    """Compress a training run (pruning, channel pruning, SVD) and fine-tune it.

    Each subcommand reads RUN_DIR (from `mobilekit train`), writes a new run directory
    (config.json, model.keras, metrics.json) that `mobilekit eval`, `export` and `bench`
    accept, and reports accuracy before and after.

    \b
    Examples:
      mobilekit compress prune runs/train/mobilenet_v2_0.5 --sparsity 0.75
      mobilekit compress channel-prune runs/train/mobilenet_v2_0.5 --macs-fraction 0.7
      mobilekit compress svd runs/train/mobilenet_v1_0.5 --energy 0.9
    """


@compress.command("prune")
@click.argument("run_dir", type=click.Path())
@click.option("--sparsity", type=float, default=0.5, help="Target fraction of zero weights.")
@click.option("--schedule", type=click.Choice(["polynomial", "constant"]), default="polynomial",
              help="polynomial: 0 -> target over 75 % of the fine-tune; constant: target "
                   "from the first step.")
@click.option("--frequency", type=int, default=None,
              show_default="about 10 mask updates before the end step",
              help="Steps between mask updates (tfmot's own default, 100, is too rare for a "
                   "short fine-tune).")
@click.option("--xnnpack-sparse", is_flag=True, default=False,
              help="Prune for XNNPACK sparse inference: explicit padding for stride-2 convs, "
                   "tfmot PruneForLatencyOnXNNPack (1x1 convs only), and also write "
                   "model_fp32_sparse.tflite.")
@_common
def prune(run_dir, sparsity, schedule, frequency, xnnpack_sparse, epochs, lr, batch_size,
          precise_bn, out, as_json, verbose):
    """Magnitude pruning (tfmot) with fine-tuning; reports per-layer sparsity and gzip size.

    The .tflite does not shrink, its gzip does; latency only improves where XNNPACK's
    sparse path runs (fp32, ARM; it is disabled on x86 CPUs with AVX).

    \b
    Examples:
      mobilekit compress prune runs/train/mobilenet_v1_0.5 --sparsity 0.5 --epochs 2
      mobilekit compress prune runs/train/mobilenet_v2 --sparsity 0.8 --xnnpack-sparse
    """
    from mobilekit.compress.jobs import prune_run

    path, metrics = prune_run(run_dir, sparsity, schedule, xnnpack_sparse, frequency,
                              **_job_kwargs(epochs, lr, batch_size, precise_bn, out, verbose))
    _report(path, metrics, as_json, [
        ("sparsity (conv/dense kernels)", f"{metrics['sparsity']['sparsity']:.1%}"),
        ("fp32 .tflite gzip", f"{metrics['source_tflite_fp32_gzip_bytes']:,} -> "
                              f"{metrics['tflite_fp32_gzip_bytes']:,} B "
                              f"({metrics['gzip_ratio']:.2f}x smaller)")])


@compress.command("channel-prune")
@click.argument("run_dir", type=click.Path())
@click.option("--macs-fraction", type=float, default=0.7,
              help="Keep at most this fraction of the MACs (uniform ratio per channel group).")
@click.option("--ratio", type=float, default=None, show_default="from --macs-fraction",
              help="Remove this fraction of every prunable group's channels instead.")
@click.option("--criterion", type=click.Choice(["l1", "bn_gamma"]), default="l1",
              help="Filter ranking: L1 norm of the kernel, or |gamma| of the following BN.")
@click.option("--divisor", type=int, default=1,
              help="Round kept channel counts to a multiple of this (8 suits SIMD kernels).")
@_common
def channel_prune(run_dir, macs_fraction, ratio, criterion, divisor, epochs, lr, batch_size,
                  precise_bn, out, as_json, verbose):
    """Structured channel pruning: a smaller dense model, then a short fine-tune.

    Only channels not tied by residual adds or concatenations are removed (for inverted
    residuals: the expanded channels); squeeze-excite convs follow their block.

    \b
    Examples:
      mobilekit compress channel-prune runs/train/mobilenet_v2_0.5 --macs-fraction 0.7
      mobilekit compress channel-prune runs/train/mobilenet_v1 --ratio 0.25 --criterion bn_gamma
    """
    from mobilekit.compress.jobs import channel_prune_run

    path, metrics = channel_prune_run(run_dir, macs_fraction, ratio, criterion, divisor,
                                      **_job_kwargs(epochs, lr, batch_size, precise_bn, out,
                                                    verbose))
    _report(path, metrics, as_json, _cost_lines(metrics))


@compress.command("svd")
@click.argument("run_dir", type=click.Path())
@click.option("--energy", type=float, default=0.9,
              help="Fraction of squared singular values each factorised layer keeps.")
@click.option("--layers", "layer_names", default=None, show_default="every Dense / 1x1 Conv2D",
              help="Comma-separated layer names to consider.")
@_common
def svd(run_dir, energy, layer_names, epochs, lr, batch_size, precise_bn, out, as_json,
        verbose):
    """Low-rank factorisation (truncated SVD) of Dense and 1x1 Conv2D layers, fine-tuned.

    A layer is replaced by two thinner ones only where that saves weights.

    \b
    Examples:
      mobilekit compress svd runs/train/mobilenet_v1_0.5 --energy 0.9
      mobilekit compress svd runs/train/mobilenet_v2 --energy 0.8 --layers head_logits,last_conv
    """
    from mobilekit.compress.jobs import svd_run

    names = [n.strip() for n in layer_names.split(",") if n.strip()] if layer_names else None
    path, metrics = svd_run(run_dir, energy, names,
                            **_job_kwargs(epochs, lr, batch_size, precise_bn, out, verbose))
    _report(path, metrics, as_json,
            [("factorised layers", str(metrics["factorized"]))] + _cost_lines(metrics))


def _cost_lines(metrics):
    return [("MACs", f"{metrics['macs_before']:,} -> {metrics['macs_after']:,} "
                     f"({metrics['macs_fraction']:.1%})"),
            ("params", f"{metrics['params_before']:,} -> {metrics['params_after']:,} "
                       f"({metrics['params_fraction']:.1%})")]


def _report(path, metrics, as_json, lines):
    if as_json:
        echo_json({"run_dir": str(path), **metrics})
        return
    rows = [("run directory", str(path)),
            ("val accuracy (source)", f"{metrics['source_val_accuracy']:.4f}")]
    if "compressed_val_accuracy" in metrics:
        rows.append(("val accuracy (compressed, no fine-tune)",
                     f"{metrics['compressed_val_accuracy']:.4f}"))
    rows.append((f"val accuracy (after {metrics['epochs']} epoch(s) fine-tune)",
                 f"{metrics['val_accuracy']:.4f}"))
    width = max(len(k) for k, _ in rows + lines)
    for key, value in rows + lines:
        click.echo(f"{key.ljust(width)}  {value}")
