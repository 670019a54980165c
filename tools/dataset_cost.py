"""The README's cost of the embedded synthetic dataset: time to draw the default train +
val splits (3,000 + 500 images) at a resolution, on one core, and their size in memory.
Draws bypass the in-memory cache; NumPy's drawing is single-threaded, and the tool pins
itself to one core where the OS allows. Prints one line; writes OUT/dataset_cost.json.

    python tools/dataset_cost.py --resolution 64 --repeats 3 --out runs/dataset_cost
"""
import argparse
import os
import statistics
import time
from pathlib import Path

from mobilekit.bench.hostinfo import describe


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="draws timed (median kept)")
    parser.add_argument("--out", default="runs/dataset_cost")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from mobilekit.data import synthetic
    from mobilekit.io import write_json_atomic

    splits = {s: synthetic.DEFAULTS[s] for s in ("train", "val")}
    walls, cpus, nbytes, images = [], [], 0, 0
    for _ in range(args.repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        drawn = [synthetic._draw(s, args.resolution, per, synthetic.DEFAULTS["seed"],
                                 len(synthetic.CLASS_NAMES)) for s, per in splits.items()]
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        nbytes = sum(x.nbytes + y.nbytes for x, y in drawn)
        images = sum(len(y) for _, y in drawn)
    wall = statistics.median(walls)
    pixels = images * args.resolution ** 2
    row = {"resolution": args.resolution, "images": images, "wall_s": round(wall, 2),
           "cpu_s": round(statistics.median(cpus), 2), "walls_s": [round(w, 2) for w in walls],
           "us_per_pixel": round(1e6 * wall / pixels, 3),
           "cpu_us_per_pixel": round(1e6 * statistics.median(cpus) / pixels, 3),
           "ms_per_image": round(1e3 * wall / images, 2), "memory_mb": round(nbytes / 1e6, 1),
           "machine": describe()}
    write_json_atomic(Path(args.out) / "dataset_cost.json", row)
    print(f"{images} images at {args.resolution} px: {wall:.1f} s wall on one core, "
          f"{row['cpu_s']} CPU-s (medians of {args.repeats}; {row['us_per_pixel']} µs wall, "
          f"{row['cpu_us_per_pixel']} µs CPU per pixel), {row['memory_mb']} MB of uint8 in "
          f"memory; load average {os.getloadavg()[0]:.1f}; {row['machine']}")


if __name__ == "__main__":
    main()
