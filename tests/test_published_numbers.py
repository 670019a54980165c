"""Every published variant in every model card: params within 2 %, MACs within 3 %, counted."""
import functools

import pytest

from mobilekit.profile import profile_model
from mobilekit.zoo.cards import compare, published_entries
from mobilekit.zoo.registry import create_model

ENTRIES = [(n, e) for n, e in published_entries()]


@functools.lru_cache(maxsize=None)
def _profile(name, kwargs_items):
    return profile_model(create_model(name, **dict(kwargs_items)))


def _id(item):
    name, entry = item
    return f"{name}:{entry['variant']}"


@pytest.mark.parametrize("item", ENTRIES, ids=[_id(i) for i in ENTRIES])
def test_published_variant(item):
    name, entry = item
    if not entry.get("check", True):
        assert entry.get("why"), "an unchecked published row must say why"
        pytest.skip(f"not asserted: {entry['why'][:80]}")
    profile = _profile(name, tuple(sorted((k, tuple(v) if isinstance(v, list) else v)  # hashable
                                          for k, v in entry["kwargs"].items())))
    results = compare(entry, profile)
    assert results, "a checked row needs params_m or macs_m"
    bad = [f"{what}: ours {ours:.4f} M vs published {pub} M" for what, ours, pub, ok in results if not ok]
    assert not bad, "; ".join(bad)
