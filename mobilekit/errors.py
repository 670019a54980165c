"""Validation helpers: every bad value is named together with what is accepted."""
import difflib


def unknown_name(kind, value, accepted):
    """ValueError for an unknown name, with a did-you-mean suggestion."""
    accepted = sorted(accepted)
    close = difflib.get_close_matches(str(value), accepted, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {kind} {value!r}.{hint} Accepted: {', '.join(accepted)}")


def check_choice(what, value, accepted):
    if value not in accepted:
        shown = ", ".join(str(a) for a in accepted)
        raise ValueError(f"{what} must be one of {shown}; got {value!r}")
    return value


def check_range(what, value, low, high, low_inclusive=False, high_inclusive=True):
    lo_ok = value >= low if low_inclusive else value > low
    hi_ok = value <= high if high_inclusive else value < high
    if not (lo_ok and hi_ok):
        lb = "[" if low_inclusive else "("
        rb = "]" if high_inclusive else ")"
        raise ValueError(f"{what} must be in {lb}{low}, {high}{rb}; got {value!r}")
    return value
