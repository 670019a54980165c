"""Low-rank factorisation of Dense and 1x1 Conv2D layers by truncated SVD.

A kernel W (m inputs x n outputs) becomes two thinner layers, W ~= A B with
A = U_r sqrt(S_r) (m x r) and B = sqrt(S_r) V_r^T (r x n): `NAME_lowrank` (r units or
filters, no bias, linear, carrying the original stride) followed by `NAME` (the original
layer's width, bias and activation), so every consumer of NAME is untouched. The rank r
is the smallest that keeps `energy` of the squared singular values, and a layer is only
replaced when r (m + n) < m n, i.e. when the pair has fewer weights and MACs than W.
"""
import numpy as np

from mobilekit.compress.graph import Graph, rebuild
from mobilekit.errors import check_range
from mobilekit.keras import layers

SUFFIX = "_lowrank"
# Energy shortfall ignored when choosing r: float32 round-off of a rank-deficient kernel
# leaves singular values around 1e-7 x the largest (squared: 1e-14 of the energy).
ENERGY_TOLERANCE = 1e-9


def is_factorizable(layer):
    """Dense, or a 1x1 Conv2D without groups (channels last)."""
    if isinstance(layer, layers.Dense) and type(layer) is layers.Dense:
        return True
    return (type(layer) is layers.Conv2D and tuple(layer.kernel_size) == (1, 1)
            and layer.groups == 1 and layer.data_format == "channels_last"
            and tuple(layer.dilation_rate) == (1, 1))


def rank_for_energy(singular_values, energy):
    """Smallest r whose top-r squared singular values hold `energy` of the total."""
    sq = np.asarray(singular_values, dtype=np.float64) ** 2
    total = sq.sum()
    if total == 0:
        return 1
    cumulative = np.cumsum(sq) / total
    return int(min(np.searchsorted(cumulative, energy - ENERGY_TOLERANCE) + 1, len(sq)))


def factorize(kernel, energy):
    """(A, B, rank, energy kept) for a 2-D kernel (m x n)."""
    u, s, vt = np.linalg.svd(np.asarray(kernel, dtype=np.float64), full_matrices=False)
    r = rank_for_energy(s, energy)
    root = np.sqrt(s[:r])
    kept = float((s[:r] ** 2).sum() / max((s ** 2).sum(), 1e-300))
    return (u[:, :r] * root).astype(np.float32), (root[:, None] * vt[:r]).astype(np.float32), \
        r, kept


def svd_factorize(model, energy=0.9, layers=None, only_if_smaller=True):
    """A new model with Dense / 1x1 Conv2D layers replaced by rank-r pairs.

    layers: names to consider (default: every eligible layer). only_if_smaller=False
    replaces a layer even when the pair is not smaller (for checks). Returns
    (new model, report) where report lists, per considered layer, its shape, rank, the
    energy kept, the weights before / after and whether it was replaced.
    """
    check_range("energy", energy, 0, 1, low_inclusive=False, high_inclusive=True)
    graph = Graph(model)
    names = _targets(graph, layers)
    rows, factors = [], {}
    for name in names:
        layer = graph.layer(name)
        kernel = layer.get_weights()[0]
        m, n = kernel.shape[-2], kernel.shape[-1]
        a, b, r, kept = factorize(kernel.reshape(m, n), energy)
        replace = r * (m + n) < m * n or not only_if_smaller
        rows.append({"name": name, "type": type(layer).__name__, "inputs": int(m),
                     "outputs": int(n), "rank": r, "energy_kept": round(kept, 6),
                     "weights_before": int(m * n), "weights_after": int(r * (m + n)),
                     "replaced": bool(replace)})
        if replace:
            factors[name] = (a, b, kernel.shape)
            _split(graph, name, r)

    def weights_for(layer):
        if layer.name in factors:
            _, b, shape = factors[layer.name]
            rest = graph.model.get_layer(layer.name).get_weights()[1:]
            return [b.reshape(shape[:-2] + b.shape)] + rest
        base = layer.name[:-len(SUFFIX)] if layer.name.endswith(SUFFIX) else None
        if base in factors:
            a, _, shape = factors[base]
            return [a.reshape(shape[:-2] + a.shape)]
        return None

    new = rebuild(graph, weights_for) if factors else model
    return new, {"energy": energy, "layers": rows,
                 "replaced": sum(r["replaced"] for r in rows)}


def _targets(graph, names):
    eligible = [n for n in graph.names() if is_factorizable(graph.layer(n))]
    if names is None:
        return eligible
    for name in names:
        if name not in graph.entries:
            raise ValueError(f"layer {name!r} is not in the model")
        if name not in eligible:
            raise ValueError(f"layer {name!r} ({graph.class_name(name)}) cannot be factorised; "
                             "accepted: Dense and 1x1 Conv2D layers without groups")
    return list(names)


def _split(graph, name, rank):
    """Insert NAME_lowrank (rank wide, no bias, the stride) before NAME (now stride 1)."""
    entry = graph.entries[name]
    cfg = entry["config"]
    first = dict(cfg, name=name + SUFFIX, use_bias=False, activation="linear",
                 bias_regularizer=None, bias_constraint=None, activity_regularizer=None)
    first["units" if "units" in cfg else "filters"] = int(rank)
    if "strides" in cfg:
        cfg["strides"] = (1, 1)
    graph.insert_before(name, {"module": entry.get("module", "keras.layers"),
                               "class_name": entry["class_name"],
                               "registered_name": entry.get("registered_name"),
                               "config": first, "name": name + SUFFIX})
