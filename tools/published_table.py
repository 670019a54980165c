"""Print ours-vs-published params/MACs for every [[published]] row of the model cards.

Usage: python tools/published_table.py [--family NAME ...] > table.md
"""
import argparse
import functools

import mobilekit  # noqa: F401
from mobilekit.report.tables import format_table
from mobilekit.zoo.cards import compare, kwargs_key, profile_entry, published_entries
from mobilekit.zoo.registry import get_entry


_profile = functools.lru_cache(maxsize=None)(profile_entry)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", action="append", help="only these zoo names")
    args = parser.parse_args()
    rows = []
    for name, entry in published_entries():
        if args.model and name not in args.model:
            continue
        p = _profile(name, kwargs_key(entry))
        cmp = {what: (ours, pub, ok) for what, ours, pub, ok in compare(entry, p)}
        params = cmp.get("params")
        macs = cmp.get("macs")
        status = "checked" if entry.get("check", True) else "not asserted"
        if entry.get("check", True) and not all(v[2] for v in cmp.values()):
            status = "MISMATCH"
        rows.append([name, entry["variant"], get_entry(name).family,
                     f"{p['trainable_params'] / 1e6:.3f}", entry.get("params_m", "-"),
                     f"{(p['macs'] + (p['activations'] if entry.get('macs_convention') == 'macs_plus_activations' else 0)) / 1e6:.1f}",
                     entry.get("macs_m", "-"), status,
                     "" if params is None else f"{100 * (params[0] - params[1]) / params[1]:+.1f}%",
                     "" if macs is None else f"{100 * (macs[0] - macs[1]) / macs[1]:+.1f}%"])
    print(format_table(["model", "published variant", "family", "our params (M)", "published (M)",
                        "our MACs (M)", "published (M)", "status", "Δparams", "ΔMACs"],
                       rows, markdown=True))


if __name__ == "__main__":
    main()
