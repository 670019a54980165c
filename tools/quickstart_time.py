"""The README's quickstart duration: runs `mobilekit quickstart` as a user would (a fresh
process, default settings) and reports its wall time, its CPU time and the machine's load
average before and after (other jobs on the machine stretch the wall time, not the CPU
time). Prints one line; writes OUT/quickstart_time.json.

    python tools/quickstart_time.py --out runs/quickstart_time
"""
import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from mobilekit.bench.hostinfo import describe


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/quickstart_time")
    args = parser.parse_args()

    from mobilekit.io import write_json_atomic

    out = Path(args.out)
    load_before = os.getloadavg()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mobilekit", "quickstart", "--out", str(out / "run")],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
           "load_before": [round(x, 2) for x in load_before],
           "load_after": [round(x, 2) for x in os.getloadavg()], "machine": describe()}
    write_json_atomic(out / "quickstart_time.json", row)
    print(f"mobilekit quickstart: {row['wall_s']:.0f} s wall, {row['cpu_s']:.0f} CPU-s; "
          f"load average {row['load_before'][0]:.1f} before, {row['load_after'][0]:.1f} after; "
          f"{row['machine']}")


if __name__ == "__main__":
    main()
