"""Training a zoo classifier into a run directory (see mobilekit.train.rundir).

Settings resolve as: explicit argument > the model card's [recipe] table > DEFAULTS.
With --distribute, `batch_size` is per replica: the global batch is batch_size x replicas
and the learning rate is scaled linearly by the number of replicas (Goyal et al. 2017).
"""
import json
import math
import os
import sys
import tempfile
import time
import weakref
from pathlib import Path

from mobilekit.errors import check_choice, check_range

OPTIMIZERS = ("sgd", "adam", "adamw")
DISTRIBUTE = ("none", "mirrored", "multi-worker")
# Learning rate at batch 64 (scaled linearly with the global batch) and weight decay, per optimizer.
BASE_LR = {"sgd": 0.05, "adam": 2e-3, "adamw": 2e-3}
WEIGHT_DECAY = {"sgd": 4e-5, "adam": 0.0, "adamw": 0.05}
LR_REFERENCE_BATCH = 64
# Built-in defaults on the synthetic set (below explicit args and the card's recipe):
# 64 px and SGD at 0.1 for batch 32 reach 15-22 % val accuracy (chance 10 %; seeds 0-2,
# tools/quickstart_seeds.py) with mobilenet_v1 alpha 0.75 in 3 epochs; Adam at 1e-3 14-16 %.
SYNTHETIC_RESOLUTION = 64
SYNTHETIC_OPTIMIZER = "sgd"
SYNTHETIC_SGD_LR = 0.2  # per 64 images
# Fine-tuning a pretrained backbone at the head's rate wrecks its features; a tenth is the
# usual step (Keras' transfer-learning guide and TFLite Model Maker go lower still with Adam).
FINE_TUNE_LR_FACTOR = 10
DEFAULTS = {
    "data": "synthetic", "epochs": 10, "batch_size": 32, "optimizer": "adam", "lr": None,
    "momentum": 0.9, "schedule": "cosine", "warmup_epochs": 0.0, "label_smoothing": 0.1,
    "weight_decay": None, "teacher": None, "distill_temperature": 4.0, "distill_weight": 0.5,
    "seed": 0, "early_stopping": 0, "keep_checkpoints": 3, "distribute": "none",
    "deterministic": False, "precise_bn": 20, "alpha": None, "resolution": None, "model_options": {},
    "qat": False, "init_from": None,
    # Transfer learning: start from keras.applications weights ("imagenet" or a file), train
    # the new head alone for freeze_epochs (backbone frozen, BatchNorm in inference mode),
    # then the whole network at fine_tune_lr (default lr / FINE_TUNE_LR_FACTOR).
    "weights": None, "freeze_epochs": 0, "fine_tune_lr": None,
    # QAT: training images whose float activations start the ranges (0: tfmot's [-6, 6]).
    "qat_range_samples": 256,
}


def resolve_config(model, **args):
    """The full training config: explicit args over the card's [recipe] over DEFAULTS."""
    from mobilekit.zoo.registry import get_card, get_entry

    entry = get_entry(model)
    unknown = set(args) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown training setting {sorted(unknown)[0]!r}; accepted: "
                         f"{', '.join(sorted(DEFAULTS))}")
    try:
        recipe = get_card(model).get("recipe", {})
    except FileNotFoundError:
        recipe = {}
    config = dict(DEFAULTS)
    synthetic = str(args.get("data") or recipe.get("data") or DEFAULTS["data"]).split(":")[0] == "synthetic"
    if synthetic:
        config["optimizer"] = SYNTHETIC_OPTIMIZER
    recipe = {k: v for k, v in recipe.items() if k in DEFAULTS}
    if args.get("optimizer") not in (None, recipe.get("optimizer")):
        recipe.pop("lr", None)  # a card's learning rate belongs to the card's optimizer
    config.update(recipe)
    config.update({k: v for k, v in args.items() if v is not None})
    config["model"] = model
    check_choice("optimizer", config["optimizer"], OPTIMIZERS)
    check_choice("distribute", config["distribute"], DISTRIBUTE)
    for key in ("epochs", "batch_size"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise ValueError(f"{key} must be a positive integer; got {config[key]!r}")
    check_range("qat_range_samples", config["qat_range_samples"], 0, float("inf"),
                low_inclusive=True)
    check_range("label_smoothing", config["label_smoothing"], 0, 1, low_inclusive=True,
                high_inclusive=False)
    check_range("distill_weight", config["distill_weight"], 0, 1, low_inclusive=True)
    if config["resolution"] is None:
        # The synthetic set is drawn at any size: its 64 px, or the smallest the model takes.
        config["resolution"] = (max(SYNTHETIC_RESOLUTION, entry.min_resolution) if synthetic
                                else entry.default_resolution)
    if config["weight_decay"] is None:
        config["weight_decay"] = WEIGHT_DECAY[config["optimizer"]]
    if config["lr"] is None:
        base = BASE_LR[config["optimizer"]]
        if synthetic and config["optimizer"] == "sgd":
            base = SYNTHETIC_SGD_LR
        config["lr"] = base * config["batch_size"] / LR_REFERENCE_BATCH
    _check_transfer(config)
    return config


def _check_transfer(config):
    freeze = config["freeze_epochs"]
    if not isinstance(freeze, int) or not 0 <= freeze <= config["epochs"]:
        raise ValueError(f"freeze_epochs must be an integer in [0, epochs={config['epochs']}]; "
                         f"got {freeze!r}")
    if freeze and not (config["weights"] or config["init_from"]):
        raise ValueError("--freeze-epochs trains a new head on a pretrained backbone: give "
                         "--weights imagenet|PATH (or --from RUN)")
    if config["weights"] and config["init_from"]:
        raise ValueError("give --weights or --from, not both")
    if config["fine_tune_lr"] is None:
        config["fine_tune_lr"] = config["lr"] / FINE_TUNE_LR_FACTOR
    check_range("fine_tune_lr", config["fine_tune_lr"], 0, float("inf"))


def phases(config):
    """The run's training phases, 1-based inclusive epochs: [head (frozen backbone)], then
    the whole network; one phase when nothing is frozen."""
    freeze, epochs = config.get("freeze_epochs", 0), config["epochs"]
    out = []
    if freeze:
        out.append({"name": "head", "first_epoch": 1, "last_epoch": freeze,
                    "trainable": "head", "lr": config["lr"]})
    if epochs > freeze:
        out.append({"name": "fine-tune" if freeze else "train", "first_epoch": freeze + 1,
                    "last_epoch": epochs, "trainable": "all",
                    "lr": config["fine_tune_lr"] if freeze else config["lr"]})
    return out


def make_strategy(kind):
    """None, MirroredStrategy (GPUs of this host) or MultiWorkerMirroredStrategy (TF_CONFIG)."""
    from mobilekit.keras import tf

    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--distribute multi-worker needs TF_CONFIG (cluster and task) set "
                             "in the environment of every worker")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None


def chief_from_env(distribute):
    """Whether this process writes the run directory: always, except for a multi-worker
    task that is not the chief (TF_CONFIG "chief", else "worker" 0)."""
    if distribute != "multi-worker" or "TF_CONFIG" not in os.environ:
        return True
    try:
        tf_config = json.loads(os.environ["TF_CONFIG"])
        task = tf_config["task"]
    except (ValueError, KeyError):
        raise ValueError("TF_CONFIG must be JSON with 'cluster' and 'task'; got "
                         f"{os.environ['TF_CONFIG']!r}") from None
    if task.get("type") == "chief":
        return True
    has_chief = "chief" in tf_config.get("cluster", {})
    return not has_chief and task.get("type") == "worker" and int(task.get("index", 0)) == 0


def train(config, run_dir, resume=False, verbose=None):
    """Train per `config` into `run_dir`; returns metrics.json's dict."""
    from mobilekit.keras import keras, tf
    from mobilekit.train import rundir

    strategy = make_strategy(config["distribute"])  # before any other TF op (collectives)
    chief = chief_from_env(config["distribute"])
    replicas = strategy.num_replicas_in_sync if strategy else 1
    run_dir = Path(run_dir)
    keras.utils.set_random_seed(config["seed"])
    if config["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    config = _pretrained(config)
    data = _datasets(config, replicas, resume)
    config = _finish_config(config, data, replicas)
    if chief:
        rundir.write_config(run_dir, config)
    done = rundir.latest_checkpoint(run_dir)[0] if resume else 0
    # The phases still to run; the last one when the run is complete (for the restore).
    plan = [p for p in config["phases"] if p["last_epoch"] > done] or config["phases"][-1:]
    scope = strategy.scope() if strategy else _null_scope()
    with scope:
        student, fit_model, optimizer = _build(config, data, plan[0])
    start_epoch, state = 0, {"history": [], "best": None, "best_epoch": 0}
    if resume:
        # At a phase change the new phase starts with a fresh optimizer, as in a run
        # that was never interrupted: restore the model only.
        start_epoch, state = _restore(run_dir, student, optimizer, scope, chief,
                                      with_optimizer=done >= plan[0]["first_epoch"])
    if start_epoch >= config["epochs"] or state.get("stopped_early"):
        return _finish(run_dir, config, state, chief)
    train_ds = data["train"]
    if start_epoch:
        # A fresh shuffle stream for the remaining epochs, still fixed by the seed.
        train_ds = _train_dataset(config, replicas, seed=config["seed"] + 7919 * start_epoch)[0]
    callbacks = [EpochEnd(run_dir, config, student, optimizer, state, chief)]
    if config["precise_bn"] and strategy is None:
        callbacks.append(PreciseBN(student, train_ds, config["precise_bn"]))
    if chief and _has_tensorboard():
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False,
                                                     profile_batch=0))
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    for i, phase in enumerate(plan):
        if i:
            with scope:
                callbacks[0].optimizer_ref = _build_phase(config, student, fit_model, phase)
        if len(config["phases"]) > 1:
            print(_phase_line(phase, student), file=sys.stderr)
        fit_model.fit(train_ds, validation_data=data["val"], epochs=phase["last_epoch"],
                      initial_epoch=start_epoch, callbacks=callbacks, verbose=verbose)
        start_epoch = phase["last_epoch"]
        if callbacks[0].state.get("stopped_early"):
            break
    return _finish(run_dir, config, callbacks[0].state, chief)


def _pretrained(config):
    """--weights: the file (fetched into Keras' cache for "imagenet") and its record for
    config.json; the data is then normalised as those weights were trained, unless the
    run's normalisation is already fixed (a resume)."""
    if not config.get("weights"):
        return config
    from mobilekit.zoo.registry import model_alpha
    from mobilekit.zoo.weights import preprocessing, resolve_weights

    options = config.get("model_options") or {}
    path, record = resolve_weights(config["model"], config["weights"],
                                   alpha=model_alpha(config["model"], config["alpha"]),
                                   resolution=config["resolution"],
                                   minimalistic=options.get("minimalistic", False))
    source = _source_run(path)
    if source.get("class_names"):
        record["class_names"] = source["class_names"]
    if source.get("resolution"):
        record["resolution"] = source["resolution"]
        if source["resolution"] != config["resolution"]:
            # Measured: a 64 px synthetic-data MobileNet v1 (0.25) read by class name scored
            # 46 % on 64 px images of another draw, 21 % on the same at 128 px.
            print(f"warning: the weights were trained at {source['resolution']} px and this run "
                  f"trains at {config['resolution']} px; features learned at one scale transfer "
                  "poorly to another (train the source at the target's resolution)",
                  file=sys.stderr)
    config = dict(config, weights_file={**record, "path": str(path)})
    if config.get("mean") is None:
        config["mean"], config["std"] = _source_normalisation(path) or \
            preprocessing(config["model"])
    return config


def _source_normalisation(weights_path):
    """(mean, std) of the mobilekit run a weights file comes from, else None: that backbone
    saw its dataset's statistics, not keras.applications' scaling (mean 128 / std 75 on the
    default data against 127.5 / 127.5)."""
    source = _source_run(weights_path)
    if source.get("mean") and source.get("std"):
        return source["mean"], source["std"]
    return None


def _source_run(weights_path):
    """The config of the mobilekit run a weights file (or run folder) comes from, else {}."""
    from mobilekit.train.rundir import is_run_dir, load_run

    path = Path(weights_path)
    folder = path if path.is_dir() else path.parent
    return load_run(folder) if is_run_dir(folder) else {}


def _match_head(student, source, config):
    """Put the imported classifier in this data's class order (see zoo.weights.match_head);
    the source's class names come from its run's config.json (unknown: kept as it is)."""
    from mobilekit.zoo.weights import match_head

    names = _source_run(source).get("class_names")
    if not names or len(names) != config["num_classes"]:
        return "kept"  # another class count: transfer_weights already started a new head
    done = match_head(student, names, config["class_names"])
    if done != "kept":
        what = ("its classes reordered by name to this data's order" if done == "reordered"
                else "a new head: the source's classes are not this data's")
        print(f"classifier: {what}", file=sys.stderr)
    return done


def _phase_line(phase, student):
    trainable = sum(layer.count_params() for layer in student.layers if layer.trainable)
    what = ("head only, backbone frozen (BatchNorm in inference mode)"
            if phase["trainable"] == "head" else "all layers")
    return (f"phase {phase['name']}: epochs {phase['first_epoch']}-{phase['last_epoch']}, "
            f"{what}, {trainable:,} trainable parameters, lr {phase['lr']:g}")


def _has_tensorboard():
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        print("warning: tensorboard is not installed; no TensorBoard logs", file=sys.stderr)
        return False
    return True


class _null_scope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _datasets(config, replicas, resume):
    from mobilekit.data import load_dataset

    train_ds, info = _train_dataset(config, replicas, config["seed"])
    val_ds, val_info = load_dataset(config["data"], "val", config["resolution"],
                                    config["batch_size"] * replicas, training=False,
                                    mean=info["mean"], std=info["std"])
    if val_info["num_classes"] != info["num_classes"]:
        raise ValueError(f"{config['data']}: validation has {val_info['num_classes']} classes, "
                         f"training {info['num_classes']}")
    onehot = _onehot(info["num_classes"])
    return {"train": train_ds, "val": _shard(val_ds.map(onehot)), "info": info,
            "val_examples": val_info["num_examples"]}


def _train_dataset(config, replicas, seed):
    from mobilekit.data import load_dataset

    mean, std = config.get("mean"), config.get("std")
    ds, info = load_dataset(config["data"], "train", config["resolution"],
                            config["batch_size"] * replicas, training=True, seed=seed,
                            mean=mean, std=std)
    return _shard(ds.map(_onehot(info["num_classes"]))), info


def _onehot(num_classes):
    from mobilekit.keras import tf

    def fn(images, labels):
        return images, tf.one_hot(labels, num_classes)

    return fn


def _shard(ds):
    # Multi-worker: every worker reads the whole (in-memory or file) set and keeps its share.
    from mobilekit.keras import tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def _finish_config(config, data, replicas):
    import mobilekit
    from mobilekit.keras import tf

    info = data["info"]
    config = dict(config)
    if config.get("num_classes") not in (None, info["num_classes"]):
        raise ValueError(f"the run was configured for {config['num_classes']} classes but "
                         f"{config['data']} has {info['num_classes']}")
    kwargs = {"resolution": config["resolution"], "num_classes": info["num_classes"]}
    if config["alpha"] is not None:
        kwargs["alpha"] = config["alpha"]
    kwargs.update(config.get("model_options") or {})
    config.update({
        "model_kwargs": kwargs, "mean": info["mean"], "std": info["std"],
        "class_names": info["class_names"], "num_classes": info["num_classes"],
        "train_examples": info["num_examples"], "val_examples": data["val_examples"],
        "skipped_files": info["skipped"], "num_replicas": replicas,
        "global_batch_size": config["batch_size"] * replicas,
        "scaled_lr": config["lr"] * replicas,
        "steps_per_epoch": math.ceil(info["num_examples"] / (config["batch_size"] * replicas)),
        "normalization": "(pixel - mean) / std, pixels and mean/std in 0..255 units",
        "phases": phases(config),
        "versions": {"mobilekit": mobilekit.__version__, "tensorflow": tf.__version__},
    })
    return config


def _build(config, data, phase):
    from mobilekit.layers.group_conv import train_grouped_convs_without_xla
    from mobilekit.zoo.registry import create_model

    weights = (config.get("weights_file") or {}).get("path")
    student = create_model(config["model"], **config["model_kwargs"], weights=weights)
    if weights:
        _match_head(student, weights, config)
    if config.get("init_from"):
        init_weights(student, config["init_from"])
        _match_head(student, config["init_from"], config)
    if config.get("qat"):
        from mobilekit.compress.qat import init_ranges, quantize_model
        from mobilekit.export.pipeline import dataset_samples

        # Quantization-aware training: fake-quant wrappers; export gives a full-int8 model.
        # Ranges start from the float network's activations on training images (eval
        # transform, as PTQ calibrates), not tfmot's [-6, 6].
        float_student = student
        student = quantize_model(student)
        if config.get("qat_range_samples", 0) > 0:
            images = dataset_samples(config["data"], config["resolution"],
                                     config["qat_range_samples"], config["mean"],
                                     config["std"], seed=config["seed"])
            init_ranges(student, float_student, images)
    train_grouped_convs_without_xla(student)
    from mobilekit.train.distill import Distiller, StudentWrapper

    fit_model = StudentWrapper(student)
    if config["teacher"]:
        teacher = load_teacher(config["teacher"], config)
        fit_model = Distiller(student, teacher, config["distill_temperature"],
                              config["distill_weight"])
    optimizer = _build_phase(config, student, fit_model, phase)
    return student, fit_model, optimizer


def _build_phase(config, student, fit_model, phase):
    """Set what trains in `phase`, and compile with a new optimizer whose schedule spans
    the phase (its peak: the phase's lr, scaled like lr by the replicas)."""
    from mobilekit.keras import keras
    from mobilekit.train.schedules import make_schedule

    if phase["trainable"] == "head":
        head = [layer for layer in student.layers if layer.weights][-1]
        _FROZEN[student] = [layer for layer in student.layers
                            if layer.trainable and layer is not head]
        for layer in _FROZEN[student]:
            layer.trainable = False  # a frozen BatchNorm also runs in inference mode
    else:
        for layer in _FROZEN.pop(student, []):
            layer.trainable = True
    first = phase["first_epoch"] == 1
    schedule = make_schedule(config["schedule"], phase["lr"] * config["num_replicas"],
                             phase["last_epoch"] - phase["first_epoch"] + 1,
                             config["steps_per_epoch"], config["warmup_epochs"] if first else 0)
    optimizer = _optimizer(config, schedule)
    optimizer.build(student.trainable_variables)
    k = min(5, config["num_classes"])
    fit_model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                  label_smoothing=config["label_smoothing"]),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(k, name="top5")])
    return optimizer


# student -> the layers its head phase froze (and the next phase unfreezes).
_FROZEN = weakref.WeakKeyDictionary()


def init_weights(model, source):
    """Start from the best model of a run (or a .keras file) of the same architecture."""
    from mobilekit.loading import load_keras
    from mobilekit.train.rundir import BEST

    source = Path(source)
    path = source / BEST if source.is_dir() else source
    if not path.is_file():
        raise FileNotFoundError(f"--from {str(source)!r}: no model at {path}")
    weights = load_keras(path).get_weights()
    expected = [w.shape for w in model.get_weights()]
    if [w.shape for w in weights] != expected:
        raise ValueError(f"--from {str(source)!r} is not the same architecture as "
                         f"{model.name} (check --model, --alpha, --resolution and the data's classes)")
    model.set_weights(weights)


def _optimizer(config, schedule):
    from mobilekit.keras import keras

    wd = config["weight_decay"] or None
    name = config["optimizer"]
    if name == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=config["momentum"], nesterov=True,
                                   weight_decay=wd)
    elif name == "adam":
        opt = keras.optimizers.Adam(schedule, weight_decay=wd)
    else:
        opt = keras.optimizers.AdamW(schedule, weight_decay=wd or 0.0)
    if wd:
        # Decay conv/dense kernels only, never BatchNorm or biases.
        opt.exclude_from_weight_decay(var_names=["_bn", "bias", "gamma", "beta"])
    return opt


def load_teacher(path, config):
    """The best model of a teacher run (or a .keras file), checked against the student's data."""
    from mobilekit.keras import keras
    from mobilekit.train.rundir import BEST, load_run

    path = Path(path)
    model_path = path / BEST if path.is_dir() else path
    if path.is_dir():
        teacher_config = load_run(path)
        if teacher_config.get("num_classes") != config["num_classes"]:
            raise ValueError(f"teacher {str(path)!r} has {teacher_config.get('num_classes')} "
                             f"classes; the data has {config['num_classes']}")
    if not model_path.is_file():
        raise FileNotFoundError(f"teacher model {str(model_path)!r} does not exist")
    teacher = keras.models.load_model(model_path, compile=False)
    classes = teacher.output_shape[-1]
    if classes != config["num_classes"]:
        raise ValueError(f"teacher outputs {classes} classes; the data has {config['num_classes']}")
    size = teacher.input_shape[1:3]
    if None not in size and tuple(size) != (config["resolution"],) * 2:
        raise ValueError(f"teacher input is {size[0]}x{size[1]}; the student trains at "
                         f"{config['resolution']}x{config['resolution']} (use --resolution)")
    return teacher


def _restore(run_dir, student, optimizer, scope, chief, with_optimizer=True):
    from mobilekit.train import rundir

    for stale in run_dir.glob(f".{rundir.BEST.split('.')[0]}.*.tmp.keras"):
        stale.unlink()  # a best-model save cut short by the kill
    epoch, ckpt = rundir.latest_checkpoint(run_dir)
    if ckpt is None:
        # Killed before the first epoch ended: nothing to restore, start from scratch.
        return 0, {"history": [], "best": None, "best_epoch": 0}
    with scope:
        trackables = {"model": student, **({"optimizer": optimizer} if with_optimizer else {})}
        state = rundir.restore_checkpoint(ckpt, trackables)
    if chief:
        rundir.write_history(run_dir, state["history"])
        if state["best_epoch"] == epoch:
            # The kill may have come between the checkpoint and the best-model save.
            save_model(student, run_dir / rundir.BEST)
    print(f"Resuming {run_dir} after epoch {epoch} of {len(state['history'])} recorded",
          file=sys.stderr)
    return epoch, state


def save_model(model, path):
    """model.save to a temp name, then rename (the .keras suffix must stay last)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    if any("Quantize" in type(layer).__name__ for layer in model.layers):
        # tf_keras cannot reload a QAT .keras (QuantizeLayer variables go missing), so QAT
        # runs also keep their weights; mobilekit.loading.load_keras rebuilds from config.json.
        weights = path.with_name(f"{path.stem}.weights.h5")
        tmp = weights.with_name(f".{weights.stem}.{os.getpid()}.tmp.weights.h5")
        model.save_weights(tmp)
        os.replace(tmp, weights)


def _finish(run_dir, config, state, chief):
    from mobilekit.io import write_json_atomic
    from mobilekit.train import rundir

    metrics = summary(config, state)
    if chief:
        write_json_atomic(run_dir / rundir.METRICS, metrics)
    return metrics


def summary(config, state):
    history = state["history"]
    best = next((r for r in history if r["epoch"] == state["best_epoch"]), None)
    speeds = [r["train_images_per_sec"] for r in history if r.get("train_images_per_sec")]
    return {
        "val_accuracy": best["val_accuracy"] if best else None,
        "val_top5": best["val_top5"] if best else None,
        "val_loss": best["val_loss"] if best else None,
        "best_epoch": state["best_epoch"],
        "final_val_accuracy": history[-1]["val_accuracy"] if history else None,
        "epochs_completed": len(history),
        "epochs_planned": config["epochs"],
        "stopped_early": bool(state.get("stopped_early")),
        "num_classes": config["num_classes"],
        "val_examples": config["val_examples"],
        "train_images_per_sec": round(sum(speeds) / len(speeds), 2) if speeds else None,
        "model": config["model"],
        "model_kwargs": config["model_kwargs"],
    }


from mobilekit.keras import keras  # noqa: E402  (the callback below subclasses a Keras class)


class PreciseBN(keras.callbacks.Callback):
    """Before each validation, recompute BatchNorm moving statistics as the exact average
    over `batches` training batches ("precise BN", Wu & Johnson, arXiv:2105.07576).

    Early in training from scratch the exponential moving averages lag far behind the
    weights, and a model that learns well still validates at chance; averaging fresh
    batch statistics fixes that at the cost of a few forward passes.
    """

    def __init__(self, student, dataset, batches):
        super().__init__()
        self.student, self.dataset, self.batches = student, dataset, batches

    def on_test_begin(self, logs=None):
        bns = [layer for layer in self.student.layers
               if isinstance(layer, keras.layers.BatchNormalization)]
        momenta = [layer.momentum for layer in bns]
        try:
            for i, (images, _) in enumerate(self.dataset.take(self.batches)):
                for layer in bns:
                    layer.momentum = i / (i + 1)  # running mean of the batch statistics
                self.student(images, training=True)
        finally:
            for layer, momentum in zip(bns, momenta):
                layer.momentum = momentum


class EpochEnd(keras.callbacks.Callback):
    """At each epoch end: checkpoint (model + optimizer + history) first, then history.csv,
    then the best model, then metrics.json; also measures training throughput and applies
    early stopping. The order makes the checkpoint the one record of a completed epoch."""

    def __init__(self, run_dir, config, student, optimizer, state, chief):
        super().__init__()
        self.run_dir, self.config, self.student = Path(run_dir), config, student
        self.optimizer_ref, self.state, self.chief = optimizer, state, chief

    def on_epoch_begin(self, epoch, logs=None):
        self.batches, self.t_first, self.t_last = 0, None, None

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first = now  # the first step includes graph tracing: not timed
        self.t_last, self.batches = now, self.batches + 1

    def on_epoch_end(self, epoch, logs=None):
        from mobilekit.train import rundir

        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        lr = self.optimizer_ref._learning_rate  # the schedule object given at construction
        step = self.optimizer_ref.iterations.numpy() - 1
        row["lr"] = float(lr(step)) if callable(lr) else float(lr)
        row["train_images_per_sec"] = self._speed()
        history = [r for r in self.state["history"] if r["epoch"] <= epoch] + [row]
        improved = self.state["best"] is None or row["val_accuracy"] > self.state["best"]
        state = {"history": history, "epoch": epoch + 1,
                 "optimizer_iterations": int(self.optimizer_ref.iterations.numpy()),
                 "best": row["val_accuracy"] if improved else self.state["best"],
                 "best_epoch": epoch + 1 if improved else self.state["best_epoch"]}
        patience = self.config["early_stopping"]
        if patience and epoch + 1 - state["best_epoch"] >= patience:
            state["stopped_early"] = True
            self.model.stop_training = True
        self._checkpoint(epoch + 1, state)
        if self.chief:
            rundir.write_history(self.run_dir, history)
        if improved:
            self._save_best()
        self.state = state
        if self.chief:
            _finish(self.run_dir, self.config, state, True)

    def _speed(self):
        if self.batches < 2 or self.t_last <= self.t_first:
            return None
        images = (self.batches - 1) * self.config["global_batch_size"]
        return round(images / (self.t_last - self.t_first), 2)

    def _checkpoint(self, epoch, state):
        from mobilekit.train import rundir

        trackables = {"model": self.student, "optimizer": self.optimizer_ref}
        if self.chief:
            rundir.save_checkpoint(self.run_dir, epoch, trackables, state,
                                   self.config["keep_checkpoints"])
        else:
            # Every worker takes part in the save (it reads synchronised variables with
            # collective ops); only the chief's copy is kept.
            with tempfile.TemporaryDirectory() as tmp:
                rundir.save_checkpoint(tmp, epoch, trackables, state, keep=1)

    def _save_best(self):
        from mobilekit.train import rundir

        if self.chief:
            save_model(self.student, self.run_dir / rundir.BEST)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                save_model(self.student, Path(tmp) / rundir.BEST)
