"""Design spaces as data: what may vary, the ranges, and a reproducible sampler.

A space is named by a SPACE string `NAME[:key=value,...]`; the overrides pin one choice of
the space (e.g. `mbspace:se=off`, `regnet:group_width=8`) or keep a subset (`kernel=3|5`) so that two settings of one space
can be compared on the same budget (RegNet's design-space study). A sampled point is
`{"model": zoo name, "kwargs": create_model kwargs}` (without resolution / num_classes),
JSON-serialisable, so trials.jsonl and a model card can hold it.

Point i of a search with seed s is drawn from numpy's default_rng([s, i]): the same seed
gives the same candidates in the same order, and a resumed search redraws them exactly.
`mutate` changes one choice of a point (regularized evolution's mutation).
"""
import json
import math

import numpy as np

from mobilekit.errors import unknown_name
from mobilekit.zoo.regnet import QUANT, generate_regnet, regnet_complexity, regnet_stages

# RegNet (paper Sec. 3.3; pycls regnet_sampler): depth uniform, w0/wa/wm log-uniform, w0 a
# multiple of 8; `macs` bounds the complexity at the search resolution (RegNet samples
# within a flop regime). Ranges are narrowed from the paper's d < 64 to mobile sizes.
_REGNET = {"family": "regnet", "depth": (6, 16), "w0": (8, 64), "wa": (8.0, 48.0),
           "wm": (1.5, 3.0), "group_width": (4, 8, 16), "bottleneck_ratio": (1.0, 0.5),
           "se": ("off", "on"), "num_stages": 4, "macs_224": (100e6, 400e6)}
_REGNET_TINY = {"family": "regnet", "depth": (2, 5), "w0": (8, 16), "wa": (4.0, 16.0),
                "wm": (1.5, 2.5), "group_width": (4, 8), "bottleneck_ratio": (1.0,),
                "se": ("off", "on"), "num_stages": 0, "macs_224": (1e6, 60e6)}
# MobileNet-style blocks: per stage (base channels, stride) fixed, the rest chosen per stage.
_MB_CHOICES = {"kernel": (3, 5, 7), "expansion": (3, 4, 6), "se": ("off", "on"),
               "act": ("relu", "hswish"), "width_mult": (0.5, 0.75, 1.0, 1.25)}
_MBSPACE = {"family": "mbspace", "stem": 16, "head": 576,
            "stages": [(16, 2, (1, 2)), (24, 2, (1, 3)), (40, 2, (1, 3)), (80, 1, (1, 3)),
                       (112, 2, (1, 3))], **_MB_CHOICES}
_MBSPACE_TINY = {"family": "mbspace", "stem": 8, "head": 64,
                 "stages": [(16, 2, (1, 2)), (24, 2, (1, 2))], **_MB_CHOICES,
                 "width_mult": (0.5, 1.0)}
SPACES = {"regnet": _REGNET, "regnet-tiny": _REGNET_TINY, "mbspace": _MBSPACE,
          "mbspace-tiny": _MBSPACE_TINY}
MAX_DRAWS = 10000


def parse_space(text):
    """The space dict of `NAME[:key=value,...]` with `label` and `name` added."""
    name, _, rest = str(text).strip().partition(":")
    if name not in SPACES:
        raise unknown_name("space", name, SPACES)
    space = dict(SPACES[name], name=name, label=str(text).strip())
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in space or key in ("family", "stages", "name", "label"):
            choosable = sorted(k for k, v in SPACES[name].items() if isinstance(v, tuple))
            raise ValueError(f"space override {item!r} not understood; {name} takes "
                             f"key=value with key one of {', '.join(choosable)}")
        # a|b keeps a subset of the choices (e.g. kernel=3|5), one value pins it
        space[key] = tuple(_parse_value(key, v.strip(), SPACES[name][key])
                           for v in value.split("|"))
    return space


def _parse_value(key, text, current):
    allowed = current if isinstance(current, tuple) else (current,)
    for value in allowed:
        if str(value) == text or (isinstance(value, (int, float)) and _number(text) == value):
            return value
    raise ValueError(f"space override {key}={text} is outside the space's choices "
                     f"({', '.join(str(v) for v in allowed)})")


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


def sample(space, index, seed, resolution):
    """Point `index` of the space for `seed`: {"model", "kwargs"}; ValueError if the space
    has no valid point (e.g. contradictory overrides)."""
    rng = np.random.default_rng([seed, index])
    sampler = _sample_regnet if space["family"] == "regnet" else _sample_mbspace
    return sampler(space, rng, resolution)


def _pick(rng, choices):
    return choices[int(rng.integers(len(choices)))]


def _log_uniform(rng, bounds):
    low, high = bounds if len(bounds) == 2 else (bounds[0], bounds[0])
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _sample_mbspace(space, rng, resolution):
    stages = []
    for channels, stride, depths in space["stages"]:
        stages.append({"channels": channels, "stride": stride,
                       "depth": int(rng.integers(depths[0], depths[1] + 1)),
                       "kernel": _pick(rng, space["kernel"]),
                       "expansion": _pick(rng, space["expansion"]),
                       "se": _pick(rng, space["se"]) == "on",
                       "width_mult": _pick(rng, space["width_mult"]),
                       "act": _pick(rng, space["act"])})
    spec = {"stem": space["stem"], "head": space["head"], "stages": stages}
    return {"model": "mbspace", "kwargs": {"spec": spec}}


# Each RegNet choice: (the space's key, its draw); in this order a sample draws them.
_REGNET_KEYS = {
    "depth": ("depth", lambda s, rng: int(rng.integers(s["depth"][0], s["depth"][-1] + 1))),
    "w0": ("w0", lambda s, rng: max(QUANT, int(round(_log_uniform(rng, s["w0"]) / QUANT))
                                    * QUANT)),
    "wa": ("wa", lambda s, rng: round(_log_uniform(rng, s["wa"]), 1)),
    "wm": ("wm", lambda s, rng: round(_log_uniform(rng, s["wm"]), 3)),
    "group_width": ("group_width", lambda s, rng: int(_pick(rng, s["group_width"]))),
    "bottleneck_ratio": ("bottleneck_ratio",
                         lambda s, rng: float(_pick(rng, s["bottleneck_ratio"]))),
    "se_ratio": ("se", lambda s, rng: 0.25 if _pick(rng, s["se"]) == "on" else 0.0)}


def _sample_regnet(space, rng, resolution):
    """pycls-style draw; redrawn until the widths give the wanted stages and MACs fit."""
    for _ in range(MAX_DRAWS):
        d = {key: draw(space, rng) for key, (_, draw) in _REGNET_KEYS.items()}
        if _regnet_valid(space, d, resolution):
            return {"model": "regnet", "kwargs": d}
    raise ValueError(f"space {space['label']!r} has no valid design at {resolution} px "
                     f"after {MAX_DRAWS} draws (contradictory overrides?)")


def _regnet_valid(space, d, resolution):
    """pycls's checks (wm > 1, the widths give every stage they promise, the space's stage
    count) and the space's MAC range at `resolution`."""
    if d["wm"] <= 1:
        return False
    _, _, found, possible = generate_regnet(d["wa"], d["w0"], d["wm"], d["depth"])
    if found != possible or (space["num_stages"] and found != space["num_stages"]):
        return False
    stages = regnet_stages(d["depth"], d["w0"], d["wa"], d["wm"], d["group_width"],
                           d["bottleneck_ratio"])
    macs = regnet_complexity(stages, d["se_ratio"], resolution=resolution)["macs"]
    low, high = (m * (resolution / 224) ** 2 for m in space["macs_224"])
    return low <= macs <= high


def mutate(space, point, rng, resolution):
    """(child, mutation): `point` with exactly one choice changed to another value the space
    allows (mbspace: one stage's kernel, expansion, se, act, width_mult or depth; regnet: one
    of depth, w0, wa, wm, group_width, bottleneck_ratio, se), and a text saying which
    (`stages[2].kernel: 5 -> 3`, values as JSON). Regularized evolution's mutation (Real et
    al. 2019); a RegNet child outside pycls's checks or the MAC range is redrawn."""
    mutator = _mutate_regnet if space["family"] == "regnet" else _mutate_mbspace
    return mutator(space, json.loads(json.dumps(point)), rng, resolution)


def _mutation(path, old, new):
    return f"{path}: {json.dumps(old)} -> {json.dumps(new)}"


def _mbspace_options(space, stage, key):
    if key == "depth":
        low, high = stage[2]
        return list(range(low, high + 1))
    if key == "se":
        return [v == "on" for v in space["se"]]
    return list(space[key])


def _mutate_mbspace(space, point, rng, resolution):
    stages = point["kwargs"]["spec"]["stages"]
    # every (stage, key) whose choice has an alternative in the space
    slots = [(n, key, options) for n, stage in enumerate(space["stages"])
             for key in ("depth", "kernel", "expansion", "se", "width_mult", "act")
             if len(set(options := _mbspace_options(space, stage, key))) > 1]
    if not slots:
        raise ValueError(f"space {space['label']!r} has a single point: nothing to mutate")
    n, key, options = slots[int(rng.integers(len(slots)))]
    old = stages[n][key]
    new = _pick(rng, [v for v in dict.fromkeys(options) if v != old])
    stages[n][key] = new
    return point, _mutation(f"stages[{n}].{key}", old, new)


def _mutate_regnet(space, point, rng, resolution):
    d = point["kwargs"]
    keys = [k for k, (skey, _) in _REGNET_KEYS.items() if len(set(space[skey])) > 1]
    if not keys:
        raise ValueError(f"space {space['label']!r} has a single point: nothing to mutate")
    for _ in range(MAX_DRAWS):
        key = keys[int(rng.integers(len(keys)))]
        new = _REGNET_KEYS[key][1](space, rng)
        child = {**d, key: new}
        if new != d[key] and _regnet_valid(space, child, resolution):
            return {**point, "kwargs": child}, _mutation(key, d[key], new)
    raise ValueError(f"no valid mutation of {d} in space {space['label']!r} at {resolution} "
                     f"px after {MAX_DRAWS} draws")


def build(point, resolution, num_classes=10):
    """The Keras model of a sampled point."""
    from mobilekit.zoo.registry import create_model

    return create_model(point["model"], resolution=resolution, num_classes=num_classes,
                        **point["kwargs"])


def kernel_shapes(space, resolution):
    """{op key: {shape}} of the operators the latency model times one by one, for every
    point the space can produce at `resolution`: depthwise convs `dwconv_kK_sS` as
    (output side, channels) and pointwise convs `conv_k1_s1` as (side, C_in, C_out).
    Enumerated from the space's choices (mbspace: the widths chain through make_divisible
    as in mobilekit.zoo.mbspace); {} for spaces without such operators (regnet)."""
    if space["family"] != "mbspace":
        return {}
    from mobilekit.layers import make_divisible

    shapes = {}
    side = math.ceil(resolution / 2)  # the stem's 3x3/2 conv
    widths = {space["stem"]}
    for channels, stride, depths in space["stages"]:
        outs = {make_divisible(channels * w) for w in space["width_mult"]}
        out_side = math.ceil(side / stride)
        for i in range(depths[1]):
            first = i == 0
            for cin in (widths if first else outs):
                for e in space["expansion"]:
                    expanded = make_divisible(cin * e)
                    if expanded != cin:
                        shapes.setdefault("conv_k1_s1", set()).add(
                            (side if first else out_side, cin, expanded))
                    for k in space["kernel"]:
                        shapes.setdefault(f"dwconv_k{k}_s{stride if first else 1}",
                                          set()).add((out_side, expanded))
                    for out in outs:
                        shapes.setdefault("conv_k1_s1", set()).add((out_side, expanded, out))
        widths, side = outs, out_side
    for width in widths:  # the head's 1x1 conv
        shapes.setdefault("conv_k1_s1", set()).add((side, width, space["head"]))
    return shapes
