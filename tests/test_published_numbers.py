"""Every published variant in every model card: params within 2 %, MACs within 3 %, counted."""
import functools

import pytest

from mobilekit.zoo.cards import compare, kwargs_key, profile_entry, published_entries

ENTRIES = [(n, e) for n, e in published_entries()]


_profile = functools.lru_cache(maxsize=None)(profile_entry)


def _id(item):
    name, entry = item
    return f"{name}:{entry['variant']}"


# The fast tier (`pytest -m "not slow"`) counts the first published row of a few small
# models; every other row (full-size networks, seconds each) is slow.
FAST_MODELS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "shufflenet_v2",
               "squeezenet_1_1")


def _tiered(entries):
    first = {}
    for i, (name, _) in enumerate(entries):
        first.setdefault(name, i)
    return [pytest.param(item, id=_id(item),
                         marks=() if item[0] in FAST_MODELS and first[item[0]] == i
                         else pytest.mark.slow)
            for i, item in enumerate(entries)]


@pytest.mark.parametrize("item", _tiered(ENTRIES))
def test_published_variant(item):
    name, entry = item
    if not entry.get("check", True):
        assert entry.get("why"), "an unchecked published row must say why"
        pytest.skip(f"not asserted: {entry['why'][:80]}")
    profile = _profile(name, kwargs_key(entry))
    results = compare(entry, profile)
    assert results, "a checked row needs params_m or macs_m"
    bad = [f"{what}: ours {ours:.4f} M vs published {pub} M" for what, ours, pub, ok in results if not ok]
    assert not bad, "; ".join(bad)
