"""What happens at the head -> fine-tune phase change of `mobilekit train --weights FILE
--freeze-epochs N`, step by step: validation top-1 of the model as built (before any step),
after the head phase, at the phase change before any whole-network step (BatchNorm moving
statistics as they are, then re-estimated as precise BN does before each validation), and
after the first whole-network step; the BatchNorm statistics' shift and the learning rate
actually used. The model, data, optimizer and schedule are the trainer's own
(mobilekit.train.trainer); --keep-source-head skips the by-name head matching (the bug
behind the below-chance fine-tuning, for the comparison).

    python tools/finetune_phase_probe.py --weights runs/fvs/source/model.keras \\
        --data runs/fvs/photos-128px-seed7 --resolution 128
"""
import argparse

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="a mobilekit run's model.keras")
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="mobilenet_v1")
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--freeze-epochs", type=int, default=1)
    parser.add_argument("--fine-tune-lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-source-head", action="store_true",
                        help="import the head column for column (the old behaviour)")
    args = parser.parse_args()

    from mobilekit.keras import keras
    from mobilekit.train import trainer

    if args.keep_source_head:
        trainer._match_head = lambda *a: "kept"
    config = trainer.resolve_config(args.model, alpha=args.alpha, data=args.data,
                                    resolution=args.resolution, seed=args.seed,
                                    epochs=args.freeze_epochs + 1,
                                    freeze_epochs=args.freeze_epochs, weights=args.weights,
                                    fine_tune_lr=args.fine_tune_lr)
    keras.utils.set_random_seed(config["seed"])
    config = trainer._pretrained(config)
    data = trainer._datasets(config, 1, False)
    config = trainer._finish_config(config, data, 1)
    head, tune = config["phases"]
    student, fit_model, optimizer = trainer._build(config, data, head)
    bns = [layer for layer in student.layers if isinstance(layer, keras.layers.BatchNormalization)]

    def top1():
        right = total = 0
        for images, onehot in data["val"]:
            logits = student(images, training=False).numpy()
            right += int((logits.argmax(1) == onehot.numpy().argmax(1)).sum())
            total += len(logits)
        return 100 * right / total

    def stats():
        return [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
                for layer in bns]

    def shift(before):
        # Mean |change of the moving mean| in units of the old std, and median var ratio.
        now = stats()
        dmean = np.mean([np.mean(np.abs(m1 - m0) / np.sqrt(v0 + 1e-3))
                         for (m0, v0), (m1, _) in zip(before, now)])
        ratio = np.median(np.concatenate([v1 / (v0 + 1e-6) for (_, v0), (_, v1) in
                                          zip(before, now)]))
        return f"BN moving mean moved {dmean:.3f} std, moving var x{ratio:.3f} (median)"

    def precise_bn():
        trainer.PreciseBN(student, data["train"], config["precise_bn"]).on_test_begin()

    rows = [("as built (source weights, head matched)" if not args.keep_source_head else
             "as built (source head kept column for column)", top1(), "")]
    fit_model.fit(data["train"], epochs=args.freeze_epochs, verbose=0)
    lr = optimizer._learning_rate
    rows.append((f"after the head phase ({args.freeze_epochs} epoch(s), lr {head['lr']:g} peak)",
                 top1(), f"last lr {float(lr(optimizer.iterations - 1)):.3g}"))
    source_stats = stats()
    optimizer = trainer._build_phase(config, student, fit_model, tune)
    lr = optimizer._learning_rate
    rows.append(("phase change, no step, BN stats unchanged", top1(), ""))
    precise_bn()
    rows.append(("phase change, no step, after precise BN", top1(), shift(source_stats)))
    for layer, (mean, var) in zip(bns, source_stats):  # back to the head phase's statistics
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(var)
    fit_model.fit(data["train"].take(1), epochs=1, verbose=0)
    step_lr = float(lr(optimizer.iterations - 1))
    rows.append((f"after 1 whole-network step (lr {step_lr:.3g}), BN stats momentum-updated",
                 top1(), shift(source_stats)))
    precise_bn()
    rows.append(("after 1 whole-network step, after precise BN", top1(), shift(source_stats)))
    steps = config["steps_per_epoch"] * (tune["last_epoch"] - tune["first_epoch"] + 1)
    print(f"fine-tune schedule: {config['schedule']}, peak {tune['lr']:g}, "
          f"{steps} steps; lr at steps 0 / 1 / mid / last: "
          + " / ".join(f"{float(lr(s)):.3g}" for s in (0, 1, steps // 2, steps - 1)))
    print("| point | val top-1 (%) | note |\n|---|---|---|")
    for name, acc, note in rows:
        print(f"| {name} | {acc:.1f} | {note} |")


if __name__ == "__main__":
    main()
