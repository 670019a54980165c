"""`mobilekit train`, `mobilekit eval` and `mobilekit data stats`."""
import tempfile
from pathlib import Path

import click

from mobilekit.cli.common import echo_json, echo_next, input_size_option, parse_model_kwargs

FROM_RECIPE = "card recipe, else built-in"


@click.command()
@click.option("--model", "model", default=None, show_default="required unless --resume",
              help="Zoo model name (see `mobilekit models`).")
@click.option("--alpha", type=float, default=None, show_default="model default",
              help="Width multiplier.")
@click.option("--resolution", type=int, default=None,
              show_default="64 on synthetic data (xception: its minimum, 71), "
                           "else the model's default",
              help="Training input size (square).")
@input_size_option(show_default="--resolution",
                   help_text="Training input WIDTHxHEIGHT, e.g. 640x480 (width first; "
                             "detectors take any size >= 128 per side, classifiers a square).")
@click.option("--option", "options", multiple=True, default=(), show_default="none",
              help="Extra model kwarg key=value (repeatable).")
@click.option("--data", default=None, show_default="synthetic",
              help="Dataset: synthetic[:k=v,...], DIR, tfrecord:GLOB or tfds:NAME.")
@click.option("--epochs", type=int, default=None, show_default=f"{FROM_RECIPE} 10")
@click.option("--batch-size", type=int, default=None, show_default=f"{FROM_RECIPE} 32",
              help="Batch per replica (global batch = this x replicas).")
@click.option("--lr", type=float, default=None,
              show_default="card recipe, else synthetic: sgd 0.2, else sgd 0.05 / adam(w) "
                           "0.002; per 64 images, linear in batch",
              help="Peak learning rate for --batch-size; scaled by the number of replicas.")
@click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw"]), default=None,
              show_default=f"{FROM_RECIPE} sgd on synthetic, adam otherwise; cards of "
                           "deep nets set adam, see docs/training_recipes.md")
@click.option("--schedule", type=click.Choice(["cosine", "step"]), default=None,
              show_default=f"{FROM_RECIPE} cosine")
@click.option("--warmup-epochs", type=float, default=None, show_default=f"{FROM_RECIPE} 0")
@click.option("--label-smoothing", type=float, default=None, show_default=f"{FROM_RECIPE} 0.1")
@click.option("--weight-decay", type=float, default=None,
              show_default="sgd 4e-5, adam 0, adamw 0.05", help="Decoupled, kernels only.")
@click.option("--teacher", type=click.Path(), default=None, show_default="none",
              help="Run directory (or .keras) of a teacher for knowledge distillation.")
@click.option("--distill-temperature", type=float, default=None, show_default="4.0")
@click.option("--distill-weight", type=float, default=None, show_default="0.5",
              help="Weight of the distillation term (1 - it weighs the label loss).")
@click.option("--early-stopping", type=int, default=None, show_default="0 (off)",
              help="Stop after this many epochs without a better val_accuracy.")
@click.option("--keep-checkpoints", type=int, default=None, show_default="3")
@click.option("--precise-bn", type=int, default=None, show_default="20",
              help="Training batches averaged into BatchNorm statistics before each "
                   "validation (0: off; single-device runs only).")
@click.option("--seed", type=int, default=None, show_default="0")
@click.option("--deterministic/--no-deterministic", default=None, show_default="off",
              help="Also make TensorFlow ops deterministic (slower).")
@click.option("--distribute", type=click.Choice(["none", "mirrored", "multi-worker"]),
              default=None, show_default="none",
              help="tf.distribute strategy; multi-worker reads TF_CONFIG.")
@click.option("--qat/--no-qat", default=None, show_default="off",
              help="Quantization-aware training (tfmot); export then gives a full-int8 model. "
                   "Activation ranges start from the float model's activations on training "
                   "images (not tfmot's [-6, 6]).")
@click.option("--from", "init_from", type=click.Path(), default=None, show_default="none",
              help="Initialise from a run directory (or .keras) of the same model, e.g. to "
                   "fine-tune it with --qat.")
@click.option("--weights", default=None, show_default="none (random init)",
              help="Start from ImageNet weights: 'imagenet' (keras.applications' published "
                   "file, downloaded once into ~/.keras/models; mobilenet_v1/v2 at their "
                   "alpha x resolution grid, mobilenet_v3_large/small, efficientnet_b0-b3) "
                   "or PATH to such a .h5/.keras file. Another class count gets a new head.")
@click.option("--freeze-epochs", type=int, default=None, show_default=f"{FROM_RECIPE} 0",
              help="First train only the new head for this many epochs (backbone frozen, "
                   "its BatchNorm in inference mode), then the whole network.")
@click.option("--fine-tune-lr", type=float, default=None,
              show_default=f"{FROM_RECIPE} --lr / 10",
              help="Peak learning rate of the whole-network phase after --freeze-epochs.")
@click.option("--out", type=click.Path(), default=None,
              show_default="runs/train/<model>[-N]", help="Run directory to create.")
@click.option("--resume", type=click.Path(), default=None, show_default="none",
              help="Continue a killed or finished run directory with its own config.")
def train(model, alpha, resolution, input_size, options, out, resume, **settings):
    """Train a zoo model into a run directory.

    \b
    Examples:
      mobilekit train --model mobilenet_v1 --alpha 0.75 --epochs 3
      mobilekit train --model mobilenet_v2 --data ./photos --resolution 128 --weights imagenet --freeze-epochs 2 --epochs 6
      mobilekit train --model mobilenet_v2 --alpha 0.35 --data ./flowers --resolution 128
      mobilekit train --model mobilenet_v1 --alpha 0.25 --teacher runs/train/mobilenet_v1
      mobilekit train --model mobilenet_v1 --resume runs/train/mobilenet_v1-2
      mobilekit train --model mobilenet_v1 --alpha 0.75 --qat --from runs/train/mobilenet_v1 --epochs 2
      mobilekit train --model faceboxes --data wider:./WIDER --resolution 1024
      mobilekit train --model faceboxes --data wider:./WIDER --input-size 640x480
      mobilekit train --model faceboxes --data wider:./WIDER --qat --from runs/train/faceboxes --lr 1e-4 --epochs 5
    """
    from mobilekit.train import rundir, trainer

    if _is_detector(model, resume):
        _train_detector(model, alpha, resolution, options, out, resume, settings, input_size)
        return
    if input_size is not None:  # classifiers train square crops
        if resolution is not None:
            raise click.UsageError("give either --resolution (square) or --input-size WxH, "
                                   "not both")
        if input_size[0] != input_size[1]:
            raise click.UsageError(f"--input-size {input_size[1]}x{input_size[0]}: classifiers "
                                   "train on square inputs; give WxW or --resolution")
        resolution = input_size[0]
    if resume:
        config = rundir.load_run(resume)
        if model and model != config["model"]:
            raise ValueError(f"--model {model} does not match the run's model {config['model']}")
        run_dir = Path(resume)
        if settings.get("epochs"):
            config["epochs"] = settings["epochs"]  # extend a finished run
        metrics = trainer.train(_config_for_resume(config), run_dir, resume=True)
    else:
        if not model:
            raise ValueError("--model is required (unless --resume RUN_DIR)")
        kwargs = parse_model_kwargs(alpha, None, options)
        config = trainer.resolve_config(model, alpha=kwargs.pop("alpha", None),
                                        resolution=resolution, model_options=kwargs or None,
                                        **settings)  # no --option: the card recipe's
        if not trainer.chief_from_env(config["distribute"]):
            # A non-chief worker writes no run directory (only the chief does).
            with tempfile.TemporaryDirectory(prefix="mobilekit-worker-") as tmp:
                metrics = trainer.train(config, Path(tmp))
            click.echo("Worker finished (the chief writes the run directory)")
            echo_json(metrics)
            return
        run_dir = Path(out) if out else None
        if run_dir is not None:
            _claim(run_dir)
        else:
            run_dir = rundir.new_run_dir(_run_name(config))
        metrics = trainer.train(config, run_dir)
    click.echo(f"Run directory: {run_dir}")
    echo_json(metrics)
    echo_next(f"mobilekit export {run_dir} --quant int8")


def _is_detector(model, resume):
    from mobilekit.train.rundir import load_run
    from mobilekit.zoo.registry import get_entry

    name = model or (load_run(resume)["model"] if resume else None)
    return bool(name) and get_entry(name).task == "detection"


# Settings the detector trainer understands (the rest are classifier-only).
DETECTOR_SETTINGS = ("data", "epochs", "batch_size", "lr", "optimizer", "weight_decay", "seed",
                     "qat", "init_from")


def _train_detector(model, alpha, resolution, options, out, resume, settings, input_size=None):
    """`mobilekit train --model faceboxes ...`: same run-directory contract, detection loop."""
    from mobilekit.detection.train import train_detector

    ignored = sorted(k for k, v in settings.items()
                     if v not in (None, False) and k not in DETECTOR_SETTINGS)
    if ignored:
        raise ValueError(f"not used when training a detector: {', '.join('--' + k.replace('_', '-') for k in ignored)}")
    kwargs = {k: settings[k] for k in DETECTOR_SETTINGS if settings.get(k) is not None}
    kwargs.update(parse_model_kwargs(alpha, resolution, options, input_size))
    if resume:
        metrics = train_detector(resume=resume, **{k: v for k, v in kwargs.items() if k == "epochs"})
        run_dir = Path(resume)
    else:
        run_dir = Path(out) if out else None
        if run_dir is not None:
            _claim(run_dir)
        else:
            from mobilekit.train.rundir import new_run_dir

            run_dir = new_run_dir(model)
        metrics = train_detector(model_name=model, out=str(run_dir), **kwargs)
    click.echo(f"Run directory: {run_dir}")
    echo_json(metrics)
    echo_next(f"mobilekit export {run_dir} --quant int8")


def _config_for_resume(config):
    from mobilekit.train.trainer import DEFAULTS

    keep = set(DEFAULTS) | {"model", "mean", "std", "num_classes"}
    return {k: v for k, v in config.items() if k in keep}


def _claim(run_dir):
    from mobilekit.train.rundir import is_run_dir

    if is_run_dir(run_dir):
        raise ValueError(f"{str(run_dir)!r} already holds a run; use --resume {run_dir} to "
                         "continue it or choose another --out")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(f"--out {str(run_dir)!r} exists and is not empty")
    run_dir.mkdir(parents=True, exist_ok=True)


def _run_name(config):
    alpha = config.get("alpha")
    return config["model"] if alpha is None else f"{config['model']}_{alpha:g}"


@click.command("eval")
@click.argument("model_path", metavar="MODEL", type=click.Path())
@click.option("--data", default="synthetic", help="Dataset SPEC (its validation split).")
@click.option("--resolution", type=int, default=None, show_default="the model's input size",
              help="Needed only for models with a flexible input size.")
@click.option("--batch-size", type=int, default=64)
@click.option("--mean", type=str, default=None, show_default="run config / metadata / data",
              help="Per-channel mean in 0..255 pixel units, comma-separated (1 or 3 values).")
@click.option("--std", type=str, default=None, show_default="run config / metadata / data",
              help="Per-channel std in 0..255 pixel units, comma-separated (1 or 3 values).")
@click.option("--limit", type=int, default=None, show_default="all",
              help="Stop after about this many images.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print JSON.")
def eval_cmd(model_path, data, resolution, batch_size, mean, std, limit, as_json):
    """Top-1/top-5 accuracy of a run directory, a .keras or a .tflite model.

    \b
    Examples:
      mobilekit eval runs/train/mobilenet_v1_0.75 --data synthetic
      mobilekit eval model_int8.tflite --data ./flowers --json
      mobilekit eval model.keras --data tfrecord:'val-*.tfrecord' --mean 127.5 --std 127.5
    """
    from mobilekit.train.evaluate import evaluate

    result = evaluate(model_path, data, resolution, batch_size, _floats("--mean", mean),
                      _floats("--std", std), limit)
    if as_json:
        echo_json(result)
        return
    click.echo(f"{result['model']} ({result['backend']}) on {result['data']} "
               f"@ {result['resolution']} px: top-1 {100 * result['top1']:.2f} %, "
               f"top-5 {100 * result['top5']:.2f} % over {result['num_samples']} images")


def _floats(what, text):
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers; got {text!r}") from None


@click.group()
def data():
    """Dataset utilities.

    \b
    Examples:
      mobilekit data stats synthetic
      mobilekit data stats ./flowers --resolution 224 --json
    """


@data.command()
@click.argument("spec")
@click.option("--resolution", type=int, default=64, help="Images are resized/cropped to this.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print JSON.")
def stats(spec, resolution, as_json):
    """Per-channel mean/std (0..255 units) and class counts of a dataset's training split.

    \b
    Examples:
      mobilekit data stats synthetic
      mobilekit data stats ./flowers --resolution 224 --json
    """
    from mobilekit.data import dataset_stats
    from mobilekit.data.specs import open_source

    train = open_source(spec, "train", resolution)
    val = open_source(spec, "val", resolution)
    mean, std = dataset_stats(spec, resolution)
    result = {"data": spec, "resolution": resolution, "mean": mean, "std": std,
              "num_classes": train.num_classes, "class_names": list(train.class_names),
              "train_examples": train.num_examples, "val_examples": val.num_examples,
              "skipped_files": train.skipped + val.skipped}
    if as_json:
        echo_json(result)
        return
    click.echo(f"{spec}: {train.num_classes} classes, {train.num_examples} train / "
               f"{val.num_examples} val images ({result['skipped_files']} files skipped)")
    click.echo(f"mean {', '.join(f'{v:.2f}' for v in mean)}   std "
               f"{', '.join(f'{v:.2f}' for v in std)}   (0..255 pixel units)")
