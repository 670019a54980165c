"""Train a face detector (FaceBoxes) into a run directory.

Run-directory contract (mobilekit.train.rundir, shared with the classifiers):
config.json, history.csv (`epoch` first, then loss / loc_loss / conf_loss / lr / ap50 /
time_s), checkpoints/epoch-NNNN (weights + optimizer + state), model.keras (the best
AP50 so far, training form [loc, conf]) and metrics.json (`ap50`, `best_epoch`,
`epochs_completed`, ...). Every file is written atomically; `resume=RUN_DIR` continues
from the newest checkpoint with the stored configuration, on the same per-epoch
augmentation seeds, so an interrupted run ends where an uninterrupted one would.

Recipe: the official one is SGD (momentum 0.9, weight decay 5e-4, lr 1e-3, x0.1 at 2/3
and 5/6 of the epochs) at 1024^2 for 300 epochs; `optimizer="adam"` (the default) reaches
a usable detector on small data in far fewer epochs.
"""
import math
import sys
import time
from pathlib import Path

import numpy as np

from mobilekit.errors import check_choice, check_range
from mobilekit.io import write_json_atomic

OPTIMIZERS = ("adam", "sgd")


def _log(progress, text):
    if progress:
        print(text, file=sys.stderr, flush=True)


def lr_at(epoch, epochs, lr):
    """Step schedule of the official recipe: x0.1 after 2/3 and again after 5/6 of the run
    (epochs 200 and 250 of 300). `epoch` is 1-based."""
    drops = sum(epoch > math.floor(epochs * f) for f in (2 / 3, 5 / 6))
    return lr * 0.1 ** drops


def _resolve_size(resolution, input_shape):
    if input_shape is not None:
        h, w = int(input_shape[0]), int(input_shape[1])
    else:
        h = w = int(resolution)
    for what, v in (("height", h), ("width", w)):
        if v < 128:
            raise ValueError(f"detector input {what} must be >= 128; got {v}")
    return h, w


def _val_samples(config, train_samples):
    """Validation samples: real Sample lists, or (image, boxes, ignore) triples."""
    from mobilekit.detection import synthetic
    from mobilekit.detection.data import load_samples, parse_spec

    spec = config["val_data"] or config["data"]
    kind, _ = parse_spec(spec)
    if kind == "synthetic":
        size = max(config["input_hw"])
        return [(img, b, np.zeros(len(b), bool)) for img, b in
                synthetic.generate("val", size, config["synthetic_val"], config["seed"])]
    if config["val_data"] is None and kind != "wider":
        return train_samples  # fddb / xml: no separate split
    samples = load_samples(spec, config["val_split"])
    return samples[:config["max_images"]] if config["max_images"] else samples


def _train_samples(config):
    from mobilekit.detection import synthetic
    from mobilekit.detection.data import load_samples, parse_spec

    kind, _ = parse_spec(config["data"])
    if kind == "synthetic":
        return synthetic.generate("train", max(config["input_hw"]), config["synthetic_train"],
                                  config["seed"])
    samples = load_samples(config["data"], "train")
    return samples[:config["max_images"]] if config["max_images"] else samples


class _ValSet:
    """Validation images kept in memory, already resized for the network, for a
    per-epoch AP50 (through the same Detector post-processing as evaluation)."""

    def __init__(self, samples, model, min_face):
        from mobilekit.detection.data import Sample, read_image
        from mobilekit.detection.postprocess import Detector

        self.detector = Detector(model)  # shares the training model's weights
        input_hw = self.detector.input_hw
        self.items = []
        for s in samples:
            if isinstance(s, Sample):
                image, boxes, ignore = np.asarray(read_image(s.image)), s.boxes, s.ignore
            else:
                image, boxes, ignore = s
            h, w = image.shape[:2]
            fw = (boxes[:, 2] - boxes[:, 0]) * input_hw[1] / w
            fh = (boxes[:, 3] - boxes[:, 1]) * input_hw[0] / h
            small = (fw < min_face) | (fh < min_face)
            self.items.append((image, self.detector.prepare(image), boxes, ignore | small))

    def ap50(self, score_threshold=0.01, nms_iou=0.3):
        from mobilekit.detection.evaluate import average_precision

        dets = [self.detector.detect(img, score_threshold, nms_iou, batch=batch)
                for img, batch, _, _ in self.items]
        return average_precision(dets, [(b, ig) for _, _, b, ig in self.items])["ap"]


def _save_best(model, run_dir):
    from mobilekit.train.trainer import save_model

    save_model(model, Path(run_dir) / "model.keras")  # atomic; QAT runs keep weights too


def train_detector(model_name="faceboxes", data="synthetic", resolution=256, input_shape=None,
                   epochs=None, batch_size=8, lr=1e-3, out=None, resume=None, seed=0,
                   alpha=1.0, backbone=None, optimizer="adam", momentum=0.9,
                   weight_decay=5e-4, neg_pos_ratio=7.0, match_iou=0.35, min_face=20,
                   augment=True, val_data=None, val_split="val", max_images=None,
                   synthetic_train=64, synthetic_val=16, target_ap50=None, eval_every=1,
                   qat=False, init_from=None, progress=True):
    """Train `model_name` (a detection entry of the zoo) on `data` and write RUN_DIR `out`.

    data: "synthetic" (procedural faces, deterministic from `seed`), "wider:ROOT",
    "fddb:ROOT" or "xml:FILE_OR_DIR". Validation: `val_data` (default: WIDER's `val_split`,
    the synthetic val split, or the training images for fddb/xml). `target_ap50` stops
    early once validation AP50 reaches it. `epochs` defaults to 30 (on resume: the stored
    number). `init_from` starts from the weights of a run (or .keras file) of the same
    architecture; `qat` trains with fake-quant (tfmot) so the int8 export keeps the float
    accuracy -- the recipe: train float, then `qat=True, init_from=FLOAT_RUN` for a few
    epochs at a lower lr. Returns the metrics dict (also metrics.json).
    """
    from mobilekit.train import rundir

    if resume is not None:
        config = rundir.load_run(resume)
        config.pop("run_dir", None)
        if epochs is not None:  # extend (or shorten) the resumed run
            config["epochs"] = int(epochs)
        run_dir = Path(resume)
    else:
        if out is None:
            raise ValueError("train_detector needs out=RUN_DIR (or resume=RUN_DIR)")
        check_choice("optimizer", optimizer, OPTIMIZERS)
        check_range("lr", lr, 0, 10)
        epochs = 30 if epochs is None else epochs
        check_range("epochs", epochs, 0, 100000, low_inclusive=True)
        check_range("batch_size", batch_size, 0, 4096)
        config = dict(model=model_name, data=str(data), input_hw=list(_resolve_size(resolution, input_shape)),
                      epochs=int(epochs), batch_size=int(batch_size), lr=float(lr), seed=int(seed),
                      alpha=float(alpha), backbone=backbone, optimizer=optimizer,
                      momentum=float(momentum), weight_decay=float(weight_decay),
                      neg_pos_ratio=float(neg_pos_ratio), match_iou=float(match_iou),
                      min_face=float(min_face), augment=bool(augment), val_data=val_data,
                      val_split=val_split, max_images=max_images, synthetic_train=int(synthetic_train),
                      synthetic_val=int(synthetic_val), target_ap50=target_ap50,
                      eval_every=int(eval_every), qat=bool(qat),
                      init_from=None if init_from is None else str(init_from), task="detection")
        from mobilekit.detection.data import parse_spec

        parse_spec(config["data"])
        run_dir = Path(out)
        run_dir.mkdir(parents=True, exist_ok=True)
        if rundir.latest_checkpoint(run_dir)[1] is not None:
            raise ValueError(f"{run_dir} already holds checkpoints; pass resume={str(run_dir)!r} "
                             "to continue it or choose another out directory")
        rundir.write_config(run_dir, config)
    return _run(config, run_dir, progress)


def _build(config):
    from mobilekit.detection.anchors import generate_anchors
    from mobilekit.detection.model import map_sizes
    from mobilekit.keras import keras, tf
    from mobilekit.train.rundir import model_kwargs
    from mobilekit.zoo.registry import create_model

    keras.utils.set_random_seed(config["seed"])
    h, w = config["input_hw"]
    model = create_model(config["model"], **model_kwargs(config))
    if config.get("init_from"):
        from mobilekit.train.trainer import init_weights

        init_weights(model, config["init_from"])
    if config.get("qat"):
        from mobilekit.compress.qat import init_ranges, quantize_model

        float_model = model
        model = quantize_model(model)
        # Ranges from the float network on training images, not tfmot's [-6, 6] start.
        init_ranges(model, float_model, _range_images(config, (h, w)))
    anchors = generate_anchors((h, w), map_sizes=map_sizes(model))
    lr_var = tf.Variable(config["lr"], trainable=False, dtype=tf.float32, name="lr")
    if config["optimizer"] == "sgd":
        opt = keras.optimizers.SGD(learning_rate=lr_var, momentum=config["momentum"])
    else:
        opt = keras.optimizers.Adam(learning_rate=lr_var)
    return model, anchors, opt, lr_var


# Training images whose float activations set a QAT model's starting ranges.
QAT_RANGE_IMAGES = 32


def _range_images(config, input_hw):
    """The first training images, prepared like evaluation/export inputs."""
    from mobilekit.detection.data import Sample, network_inputs, read_image

    samples = _train_samples(config)[:QAT_RANGE_IMAGES]
    # Annotated samples carry a path, synthetic ones their pixels.
    return network_inputs((read_image(s.image) if isinstance(s, Sample) else s[0]
                           for s in samples), input_hw)


def _make_step(model, opt, config):
    from mobilekit.detection.loss import multibox_loss
    from mobilekit.keras import tf

    kernels = [v for v in model.trainable_variables if "kernel" in v.name]
    wd = config["weight_decay"] if config["optimizer"] == "sgd" else 0.0

    @tf.function
    def step(images, loc_t, labels):
        with tf.GradientTape() as tape:
            loc, conf = model(images, training=True)
            total, loc_l, conf_l = multibox_loss(loc, conf, loc_t, labels, config["neg_pos_ratio"])
            reg = 0.5 * wd * tf.add_n([tf.reduce_sum(k * k) for k in kernels]) if wd else 0.0
            objective = total + reg
        grads = tape.gradient(objective, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return total, loc_l, conf_l

    return step


def _run(config, run_dir, progress):
    from mobilekit.detection.data import detection_dataset
    from mobilekit.train import rundir

    model, anchors, opt, lr_var = _build(config)
    train_samples = _train_samples(config)
    if not train_samples:
        raise ValueError(f"no training images in {config['data']!r}")
    val = _ValSet(_val_samples(config, train_samples), model, config["min_face"])
    step = _make_step(model, opt, config)
    trackables = {"model": model, "optimizer": opt}
    history, best, best_epoch = [], -1.0, 0
    start, ckpt = rundir.latest_checkpoint(run_dir)
    if ckpt is not None:
        state = rundir.restore_checkpoint(ckpt, trackables)
        history, best, best_epoch = state["history"], state["best_ap50"], state["best_epoch"]
        _log(progress, f"resuming {run_dir} after epoch {start}")
    # One dataset for the whole run (tracing the augmentation graph costs seconds), with
    # per-epoch shuffles and augmentation seeds, so a resumed run sees the same batches.
    batches = iter(detection_dataset(
        train_samples, tuple(config["input_hw"]), anchors, config["batch_size"],
        seed=config["seed"], augment_data=config["augment"], min_face=config["min_face"],
        epochs=range(start + 1, config["epochs"] + 1),
        match_kwargs={"threshold": config["match_iou"]}))
    steps_per_epoch = math.ceil(len(train_samples) / config["batch_size"])
    stopped_early = False
    for epoch in range(start + 1, config["epochs"] + 1):
        if history and config["target_ap50"] is not None and best >= config["target_ap50"]:
            stopped_early = True
            break
        t0 = time.time()
        lr_var.assign(lr_at(epoch, config["epochs"], config["lr"]))
        sums = np.zeros(3)
        for _ in range(steps_per_epoch):
            images, loc_t, labels = next(batches)
            sums += [float(v) for v in step(images, loc_t, labels)]
        row = {"epoch": epoch, "loss": sums[0] / steps_per_epoch,
               "loc_loss": sums[1] / steps_per_epoch, "conf_loss": sums[2] / steps_per_epoch, "lr": float(lr_var.numpy())}
        if epoch % config["eval_every"] == 0 or epoch == config["epochs"]:
            row["ap50"] = val.ap50()
            if row["ap50"] > best:
                best, best_epoch = row["ap50"], epoch
                _save_best(model, run_dir)
        row["time_s"] = time.time() - t0
        history.append(row)
        rundir.save_checkpoint(run_dir, epoch, trackables,
                               {"history": history, "best_ap50": best, "best_epoch": best_epoch})
        rundir.write_history(run_dir, history)
        _write_metrics(run_dir, history, best, best_epoch, config, False)
        _log(progress, f"epoch {epoch}/{config['epochs']} loss {row['loss']:.4f} "
                       f"(loc {row['loc_loss']:.4f}, conf {row['conf_loss']:.4f}) "
                       f"ap50 {row.get('ap50', float('nan')):.4f} {row['time_s']:.1f}s")
    if not (Path(run_dir) / "model.keras").exists():
        _save_best(model, run_dir)  # zero epochs: still leave a loadable model
    return _write_metrics(run_dir, history, best, best_epoch, config, True, stopped_early)


def _write_metrics(run_dir, history, best, best_epoch, config, finished, stopped_early=False):
    last = history[-1] if history else {}
    metrics = {"task": "detection", "model": config["model"], "ap50": max(best, 0.0),
               "best_epoch": best_epoch, "epochs_completed": len(history),
               "epochs": config["epochs"], "final_loss": last.get("loss"),
               "final_ap50": last.get("ap50"), "finished": finished,
               "stopped_early": stopped_early}
    write_json_atomic(Path(run_dir) / "metrics.json", metrics)
    return metrics
