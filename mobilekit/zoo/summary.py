"""Counted summaries of zoo entries (used by `mobilekit models` and `profile`)."""
from mobilekit.zoo.registry import create_model, get_entry


def count_default(name):
    """(params, MACs) of `name` built at its default size, counted by the profiler."""
    from mobilekit.profile import profile_model

    result = profile_model(create_model(name))
    return result["params"], result["macs"]


def task_extras(name, kwargs):
    """Task-specific profile fields (e.g. a detector's anchor count)."""
    entry = get_entry(name)
    extras_fn = getattr(entry.builder, "profile_extras", None)
    return extras_fn(**kwargs) if extras_fn else {}
