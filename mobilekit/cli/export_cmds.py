"""`mobilekit export`: Keras -> .tflite (+ JSON report) in one quantization mode."""
import click

from mobilekit.cli.common import echo_next, input_size_option, parse_model_kwargs

QUANTS = ("fp32", "fp16", "dynamic", "int8", "int16x8")
CALIBRATION_METHODS = ("average", "mse", "minmax")


@click.command()
@click.argument("model_or_run")
@click.option("--quant", type=click.Choice(QUANTS), default="fp32",
              help="fp32, fp16 weights, dynamic-range, full int8, or int16 activations.")
@click.option("--io", "io_type", type=click.Choice(["auto", "float", "int8", "uint8", "int16"]),
              default="auto",
              help="Input/output type; auto = int8 for --quant int8, float otherwise.")
@click.option("--calib-data", default=None, show_default="the run's dataset",
              help="Calibration dataset SPEC (train split, eval transform), or 'random' "
                   "for a benchmark-only export.")
@click.option("--calib-samples", type=int, default=300, help="Calibration images.")
@click.option("--calib-method", type=click.Choice(list(CALIBRATION_METHODS)), default="average",
              show_default=True,
              help="int8 activation ranges, from the values the float model really produces: "
                   "mean of per-8-image min/max (robust to rare extreme activations), the "
                   "range with the least int8 rounding + clipping error per tensor (mse), or "
                   "the global min/max over all images. Outputs keep their extremes and no "
                   "range covers values every consumer ignores (below -3 before hard-swish).")
@click.option("--dense-quant", type=click.Choice(["per-tensor", "per-channel"]),
              default="per-tensor", show_default=True,
              help="int8 Dense (fully connected) weights: one scale per tensor, as TFLite's "
                   "int8 spec and tfmot's QAT do, or one per output unit (a scale and a "
                   "zero point per unit for weights and bias: 24 KB more on a 1000-class "
                   "head; XNNPACK ran such heads a few percent faster on x86).")
@click.option("--bias-correction/--no-bias-correction", default=None,
              show_default="the model card's [export] setting (on for squeezenet_1_0), else off",
              help="int8: shift each layer's bias (or the next BatchNorm's mean) by the mean "
                   "output change that rounding its weights to int8 causes, measured on "
                   "calibration images (helps networks without BatchNorm, e.g. SqueezeNet).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              show_default="<model>_<quant>.tflite in the run directory, else here",
              help="Output .tflite path; the JSON report goes beside it.")
@click.option("--allow-float-ops", is_flag=True, default=False,
              help="Keep an int8/int16x8 export even if some ops stay in float.")
@click.option("--sparse", is_flag=True, default=False,
              help="Store mostly-zero (pruned) weights sparse-encoded, the form XNNPACK's "
                   "sparse inference needs (see `mobilekit compress prune --xnnpack-sparse`).")
@click.option("--s2d-input", is_flag=True, default=False,
              help="The file takes the image in space-to-depth layout (the stride-s stem conv "
                   "on 3 channels becomes a stride-1 conv on 3*s*s channels: much faster in "
                   "int8 on x86; eval/detect rearrange images from the file's metadata).")
@click.option("--eval-data", default=None, show_default="none",
              help="Dataset SPEC: report top-1 of the .tflite vs the Keras model (val split).")
@click.option("--eval-samples", type=int, default=None, show_default="all",
              help="Evaluate at most this many images.")
@click.option("--atol", type=float, default=1e-4,
              help="fp32 parity: allowed max |tflite - keras| output difference.")
@click.option("--gpu-check/--no-gpu-check", default=True, show_default=True,
              help="Compile the file with LiteRT's real GPU accelerator (where a Vulkan driver "
                   "is set up: tools/setup_gpu.sh) and report what it took; gpu_compatible "
                   "then follows the runtime, not the static analyzer.")
@click.option("--alpha", type=float, default=None, show_default="model default",
              help="Zoo name only: width multiplier.")
@click.option("--resolution", type=int, default=None, show_default="model default",
              help="Zoo name only: square input size.")
@click.option("--num-classes", type=int, default=None, show_default="1000",
              help="Zoo name only: classifier outputs.")
@input_size_option(show_default="the model's input size",
                   help_text="Input WIDTHxHEIGHT, e.g. 640x480 (width first): a zoo model is "
                             "built at it; a trained detector (run or .keras) is rebuilt at it "
                             "with its weights (fully convolutional; anchors follow).")
@click.option("--option", "options", multiple=True, default=(), show_default="none",
              metavar="KEY=VALUE", help="Zoo name only: extra model argument (repeatable), "
                                        "e.g. input_shape=480,640,3.")
@click.option("--nms", is_flag=True, default=False,
              help="Detectors: put NMS in the file (TFLite_Detection_PostProcess; outputs "
                   "boxes, classes, scores, count as the Task Library's ObjectDetector "
                   "expects) and write the standard TFLITE_METADATA.")
@click.option("--score-threshold", type=float, default=0.05, show_default=True,
              help="--nms: keep detections scoring at least this (0..1).")
@click.option("--nms-iou", type=float, default=0.3, show_default=True,
              help="--nms: IoU above which a lower-scoring box is suppressed (0..1).")
@click.option("--max-detections", type=int, default=100, show_default=True,
              help="--nms: detections per image the file returns at most.")
def export(model_or_run, quant, io_type, calib_data, calib_samples, calib_method, dense_quant,
           bias_correction, out, allow_float_ops, sparse, s2d_input, eval_data, eval_samples,
           atol, gpu_check, alpha, resolution, num_classes, input_size, options, nms, score_threshold,
           nms_iou, max_detections):
    """Convert a run directory, a .keras file or a zoo model (random weights) to TFLite.

    Writes X.tflite (with embedded labels / normalisation / quant metadata) and the
    report X.json beside it: ops, float ops, dtypes, max tensor rank, XNNPACK partitions,
    GPU compatibility (measured by LiteRT's GPU accelerator where available), fp32 parity and (with --eval-data) top-1 of both models.

    \b
    Examples:
      mobilekit export runs/train/mobilenet_v2 --quant int8
      mobilekit export model.keras --quant fp16 --out model_fp16.tflite
      mobilekit export mobilenet_v3_large --quant int8 --calib-data random --num-classes 10
      mobilekit export runs/compress/mobilenet_v2-prune --sparse
      mobilekit export runs/train/faceboxes --quant int8 --s2d-input
      mobilekit export runs/train/faceboxes --quant fp16 --input-size 640x480 --nms
    """
    from mobilekit.export.pipeline import export as run_export, summary_lines

    from mobilekit.errors import check_range

    check_range("--score-threshold", score_threshold, 0, 1, low_inclusive=True)
    check_range("--nms-iou", nms_iou, 0, 1, low_inclusive=True)
    check_range("--max-detections", max_detections, 0, 100000)
    kwargs = parse_model_kwargs(alpha, resolution, options, input_size)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    path, report = run_export(
        model_or_run, quant, io=None if io_type == "auto" else io_type, calib_data=calib_data,
        calib_samples=calib_samples, calib_method=calib_method, dense_quant=dense_quant,
        bias_correction=bias_correction, out=out,
        allow_float_ops=allow_float_ops, sparse=sparse, s2d_input=s2d_input,
        eval_data=eval_data, eval_samples=eval_samples, atol=atol, model_kwargs=kwargs,
        nms=nms, score_threshold=score_threshold, nms_iou=nms_iou,
        max_detections=max_detections,
        log=lambda msg: click.echo(msg, err=True), gpu_check=gpu_check)
    for line in summary_lines(path, report):
        click.echo(line)
    echo_next(f"mobilekit bench {path}")
