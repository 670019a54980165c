"""Model cards: published numbers with their sources, and how to compare them with ours."""

from mobilekit.zoo.registry import get_card, list_models

PARAMS_TOLERANCE = 0.02
MACS_TOLERANCE = 0.03


def published_entries(name=None):
    """(model name, entry) for every [[published]] row of every card (or of one card)."""
    names = [name] if name else list_models()
    for n in names:
        for entry in get_card(n).get("published", []):
            yield n, entry


def kwargs_key(entry):
    """The entry's create_model kwargs as a hashable, sorted tuple (lists become tuples)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                        for k, v in entry["kwargs"].items()))


def profile_entry(entry_name, key):
    """Profile of the zoo model `entry_name` built with the kwargs of `kwargs_key`."""
    from mobilekit.profile import profile_model
    from mobilekit.zoo.registry import create_model

    return profile_model(create_model(entry_name, **dict(key)))


def _decimals(value):
    text = repr(float(value))
    if "e" in text:
        return 0
    return len(text.split(".")[1].rstrip("0"))


def allowed_error(published, relative):
    """Relative tolerance, widened to half a unit of the published figure's last digit
    (a published '0.47 M' is any count in [0.465, 0.475) M)."""
    return max(relative * published, 0.5 * 10 ** -_decimals(published))


def compare(entry, profile):
    """Compare a profile (mobilekit.profile) with one published entry.

    Returns a list of (what, ours, published, ok) with values in millions.
    """
    out = []
    if entry.get("params_m") is not None:
        ours = profile["trainable_params"] / 1e6
        pub = float(entry["params_m"])
        out.append(("params", ours, pub, abs(ours - pub) <= allowed_error(pub, PARAMS_TOLERANCE)))
    if entry.get("macs_m") is not None:
        macs = profile["macs"]
        if entry.get("macs_convention") == "macs_plus_activations":
            macs += profile["activations"]
        ours = macs / 1e6
        pub = float(entry["macs_m"])
        out.append(("macs", ours, pub, abs(ours - pub) <= allowed_error(pub, MACS_TOLERANCE)))
    return out


