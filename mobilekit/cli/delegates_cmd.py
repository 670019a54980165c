"""`mobilekit delegates`: what the GPU and XNNPACK delegates really do with .tflite files."""
import os

import click

from mobilekit.cli.common import echo_json, write_atomic, write_json_atomic


def _split(text, what, accepted):
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ValueError(f"--{what} needs at least one value; got {text!r}")
    for item in items:
        if item not in accepted:
            raise ValueError(f"--{what} must be a comma-separated list of "
                             f"{', '.join(accepted)}; got {item!r}")
    return tuple(dict.fromkeys(items))


@click.command("delegates")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--delegate", "delegates", default="gpu,xnnpack", show_default=True,
              help="Comma-separated: gpu (LiteRT's GPU accelerator), xnnpack.")
@click.option("--precision", default="fp16", show_default=True,
              help="GPU arithmetic: fp16 (the delegate's default), fp32 (enforce_f32), or "
                   "fp16,fp32 for both side by side.")
@click.option("--data", default=None, show_default="random inputs",
              help="Real inputs instead of random ones: a classifier's dataset SPEC (its "
                   "validation images, e.g. synthetic), or a detector's annotation spec "
                   "(wider:/fddb:/xml:PATH; its images warped to the file's input size).")
@click.option("--samples", type=int, default=100, show_default=True,
              help="Inputs compared per model.")
@click.option("--timing/--no-timing", default=True, show_default=True,
              help="Also time each delegate with the host runner (GPU timings on a software "
                   "adapter are CPU emulation and labelled so).")
@click.option("--out", type=click.Path(file_okay=False), default=None, show_default="none",
              help="Write delegates.json and delegates.md here.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print the JSON report.")
def delegates(models, delegates, precision, data, samples, timing, out, as_json):
    """Measure delegate coverage and numerics of .tflite files on this machine.

    For each model and delegate: whether the runtime takes the whole graph (full /
    partial / none) with the ops it leaves on the CPU and the delegate's reasons, the
    static analyzer's view beside it, the outputs against the reference kernels (max
    abs / relative error; top-1 / top-5 agreement for classifiers; box IoU and score
    difference for detectors), the timing, and a one-line verdict. GPU work runs in a
    worker process with LiteRT's real GPU accelerator; without a GPU, Mesa's software
    Vulkan provides one (tools/setup_gpu.sh). Exit code 2 when no GPU accelerator can be
    created and gpu was asked for.

    \b
    Examples:
      mobilekit delegates mobilenet_v2_fp16.tflite
      mobilekit delegates runs/train/mobilenet_v1/*.tflite --data synthetic --samples 500
      mobilekit delegates fb.tflite --delegate gpu --precision fp16,fp32 --json
      mobilekit delegates fb_640x480_nms.tflite --data wider:data/wider_face_sample
      mobilekit delegates a.tflite b.tflite --out delegates/
    """
    from mobilekit.bench.delegates import REPORT_DELEGATES, delegate_report, no_gpu
    from mobilekit.bench.gpu import PRECISIONS

    chosen = _split(delegates, "delegate", REPORT_DELEGATES)
    precisions = _split(precision, "precision", PRECISIONS)
    if samples < 1:
        raise ValueError(f"--samples must be >= 1; got {samples}")
    for model in models:
        if not os.path.isfile(model):
            raise FileNotFoundError(f"model {model!r} does not exist")
    reports = []
    for i, model in enumerate(models, 1):
        click.echo(f"[{i}/{len(models)}] {model} ...", err=True)
        report = delegate_report(model, chosen, precisions, data=data, samples=samples,
                                 timing=timing)
        missing = no_gpu(report)
        if missing:
            click.echo(f"Error: {missing}", err=True)
            raise SystemExit(2)
        for row in report["rows"]:
            click.echo(f"[{i}/{len(models)}]   {row['verdict']}", err=True)
        reports.append(report)
    from mobilekit.report.delegates import markdown_report

    if out:
        os.makedirs(out, exist_ok=True)
        write_json_atomic(os.path.join(out, "delegates.json"), reports)
        write_atomic(os.path.join(out, "delegates.md"), markdown_report(reports))
        click.echo(f"wrote {os.path.join(out, 'delegates.json')} and delegates.md", err=True)
    if as_json:
        echo_json(reports)
    else:
        click.echo(markdown_report(reports))
