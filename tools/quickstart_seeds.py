"""The README's quickstart accuracy, over several seeds: the quickstart's own training run
(`mobilekit quickstart`'s defaults: MobileNet v1, alpha 0.75, 3 epochs, synthetic data) per
seed, then the Keras model's top-1 / top-5 on the validation split as the quickstart table
reports it. Prints one line per seed and the range; writes OUT/quickstart_seeds.json.

    python tools/quickstart_seeds.py --seeds 0,1,2 --out runs/quickstart_seeds
    python tools/quickstart_seeds.py --seeds 0,1,2 --optimizer adam --lr 1e-3 \
        --out runs/quickstart_seeds_adam        # the README's Adam comparison
"""
import argparse
import os
import platform
import time
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--model", default="mobilenet_v1")
    parser.add_argument("--alpha", type=float, default=0.75)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--optimizer", default=None, help="default: the trainer's (sgd here)")
    parser.add_argument("--lr", type=float, default=None, help="default: the trainer's")
    parser.add_argument("--out", default="runs/quickstart_seeds")
    args = parser.parse_args()

    from mobilekit.io import write_json_atomic
    from mobilekit.train import trainer
    from mobilekit.train.evaluate import evaluate

    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        run_dir = Path(args.out) / f"seed-{seed}"
        config = trainer.resolve_config(args.model, alpha=args.alpha, epochs=args.epochs,
                                        data=args.data, seed=seed, optimizer=args.optimizer,
                                        lr=args.lr)
        start = time.process_time()
        trainer.train(config, run_dir, verbose=0)
        cpu_s = time.process_time() - start
        scores = evaluate(str(run_dir / "model.keras"), args.data)
        rows.append({"seed": seed, "top1": scores["top1"], "top5": scores["top5"],
                     "train_cpu_s": round(cpu_s, 1)})
        print(f"seed {seed}: top-1 {100 * scores['top1']:.1f} %  top-5 "
              f"{100 * scores['top5']:.1f} %  ({cpu_s / 60:.1f} CPU-min of training)", flush=True)
    top1 = [r["top1"] for r in rows]
    print(f"top-1 over {len(rows)} seeds: {100 * min(top1):.1f}-{100 * max(top1):.1f} %")
    write_json_atomic(Path(args.out) / "quickstart_seeds.json", {
        "model": args.model, "alpha": args.alpha, "epochs": args.epochs, "data": args.data,
        "optimizer": config["optimizer"], "lr": config["lr"],
        "rows": rows, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"})


if __name__ == "__main__":
    main()
