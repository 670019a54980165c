"""RegNetX / RegNetY and the RegNet design space (Radosavovic et al., arXiv:2003.13678).

Widths follow facebookresearch/pycls exactly (pycls/models/regnet.py `generate_regnet`,
pycls/models/blocks.py `adjust_block_compatibility`): NumPy/Python rounding is
round-half-to-even, so X-400MF's last stage is 384 and Y-800MF's are 128/768.
torchvision rounds group compatibility with `_make_divisible` instead and gets other
models (X-400MF 400, Y-800MF 144/784); `width_rounding="torchvision"` builds those.

Complexity units follow pycls `complexity()`: flops = multiply-adds (plus one add per
bias element, which our MAC count leaves out), params = weights + biases + BN gamma/beta
(= our trainable count), acts = elements of every conv/FC output.
"""
import math

import numpy as np

from mobilekit.errors import check_choice, check_range
from mobilekit.keras import layers
from mobilekit.layers import batch_norm, make_divisible, squeeze_excite
from mobilekit.layers.group_conv import group_conv
from mobilekit.zoo.common import finish_classifier, image_input
from mobilekit.zoo.registry import register_model

QUANT = 8  # pycls generate_regnet q
STAGE_STRIDE = 2
BN_EPSILON, BN_MOMENTUM = 1e-5, 0.9  # PyTorch BN defaults (eps 1e-5, momentum 0.1)
WIDTH_ROUNDINGS = ("pycls", "torchvision")

# Design parameters of the pycls reference models: facebookresearch/pycls
# configs/dds_baselines/regnet{x,y}/RegNet{X,Y}-*MF_dds_8gpu.yaml (copied in
# ../shared/reference/regnet_design.csv). STEM_W 32, BOT_MUL 1.0, SE_R 0.25 for Y.
REGNET_DESIGNS = {
    # name: (depth, w0, wa, wm, group_width, bottleneck_ratio, se_ratio)
    "regnetx_200mf": (13, 24, 36.44, 2.49, 8, 1.0, 0.0),
    "regnetx_400mf": (22, 24, 24.48, 2.54, 16, 1.0, 0.0),
    "regnetx_600mf": (16, 48, 36.97, 2.24, 24, 1.0, 0.0),
    "regnetx_800mf": (16, 56, 35.73, 2.28, 16, 1.0, 0.0),
    "regnety_200mf": (13, 24, 36.44, 2.49, 8, 1.0, 0.25),
    "regnety_400mf": (16, 48, 27.89, 2.09, 8, 1.0, 0.25),
    "regnety_600mf": (15, 48, 32.54, 2.32, 16, 1.0, 0.25),
    "regnety_800mf": (14, 56, 38.84, 2.4, 16, 1.0, 0.25),
}
DESIGN_KEYS = ("depth", "w0", "wa", "wm", "group_width", "bottleneck_ratio", "se_ratio")


def design(name):
    """Design parameters of a named pycls RegNet as a dict of DESIGN_KEYS."""
    check_choice("RegNet name", name, tuple(REGNET_DESIGNS))
    return dict(zip(DESIGN_KEYS, REGNET_DESIGNS[name]))


# ---------------------------------------------------------------- widths and depths


def generate_regnet(wa, w0, wm, depth, q=QUANT):
    """pycls generate_regnet: (stage widths, stage depths, stages, possible stages).

    u_j = w0 + wa*j; s_j = round(log(u_j / w0) / log(wm)); w_j = round(w0 * wm**s_j / q) * q.
    """
    if not (wa >= 0 and w0 > 0 and wm > 1 and w0 % q == 0):
        raise ValueError(f"RegNet needs wa >= 0, w0 > 0 and a multiple of {q}, wm > 1; "
                         f"got wa={wa}, w0={w0}, wm={wm}")
    ws_cont = np.arange(depth) * wa + w0
    ks = np.round(np.log(ws_cont / w0) / np.log(wm))
    ws_all = np.round(np.divide(w0 * np.power(wm, ks), q)).astype(int) * q
    ws, ds = np.unique(ws_all, return_counts=True)
    return ws.tolist(), ds.tolist(), len(ws), int(ks.max()) + 1


def adjust_block_compatibility(ws, bs, gs):
    """pycls: make each bottleneck width w*b a multiple of its group width (half-to-even)."""
    vs = [int(max(1, w * b)) for w, b in zip(ws, bs)]
    gs = [int(min(g, v)) for g, v in zip(gs, vs)]
    ms = [math.lcm(g, int(b)) if b > 1 else g for g, b in zip(gs, bs)]
    vs = [max(m, int(round(v / m) * m)) for v, m in zip(vs, ms)]
    ws = [int(v / b) for v, b in zip(vs, bs)]
    return ws, bs, gs


def _adjust_torchvision(ws, bs, gs):
    """torchvision _adjust_widths_groups_compatibilty: _make_divisible instead of round."""
    vs = [int(w * b) for w, b in zip(ws, bs)]
    gs = [min(g, v) for g, v in zip(gs, vs)]
    vs = [make_divisible(v, g) for v, g in zip(vs, gs)]
    return [int(v / b) for v, b in zip(vs, bs)], bs, gs


def regnet_stages(depth, w0, wa, wm, group_width, bottleneck_ratio=1.0,
                  width_rounding="pycls"):
    """[(width, blocks, group_width, bottleneck_ratio), ...] for one design point."""
    check_choice("width_rounding", width_rounding, WIDTH_ROUNDINGS)
    ws, ds = generate_regnet(wa, w0, wm, depth)[:2]
    adjust = adjust_block_compatibility if width_rounding == "pycls" else _adjust_torchvision
    ws, bs, gs = adjust(ws, [bottleneck_ratio] * len(ws), [group_width] * len(ws))
    return list(zip(ws, ds, gs, bs))


# ---------------------------------------------------------------- the network


def _conv_bn(x, filters, kernel, stride, name, groups=1, act=True):
    # group_conv: one grouped Conv2D by default (the shared helper's measured choice).
    x = group_conv(x, filters, kernel, groups, strides=stride, name=name)
    x = batch_norm(x, f"{name}_bn", epsilon=BN_EPSILON, momentum=BN_MOMENTUM)
    return layers.ReLU(name=f"{name}_act")(x) if act else x


def regnet_block(x, width, stride, group_width, bottleneck_ratio, se_ratio, name):
    """X block: 1x1 -> 3x3 group conv (stride here) -> [SE] -> 1x1 linear, + shortcut, ReLU.

    Y = X + SE after the 3x3 with squeeze width round(se_ratio * block INPUT width).
    """
    w_in = x.shape[-1]
    w_b = int(round(width * bottleneck_ratio))
    shortcut = x
    if w_in != width or stride != 1:
        shortcut = _conv_bn(x, width, 1, stride, f"{name}_proj", act=False)
    y = _conv_bn(x, w_b, 1, 1, f"{name}_a")
    y = _conv_bn(y, w_b, 3, stride, f"{name}_b", groups=w_b // group_width)
    w_se = int(round(w_in * se_ratio))
    if w_se:
        y = squeeze_excite(y, w_se, f"{name}_se", inner_act="relu", gate="sigmoid")
    y = _conv_bn(y, width, 1, 1, f"{name}_c", act=False)
    x = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(x)


def build_regnet(name, input_shape, stages, se_ratio=0.0, stem_width=32, num_classes=1000,
                 include_top=True, dropout=0.0, classifier_activation=None):
    """pycls AnyNet: stem 3x3/2 (BN, ReLU) -> stages of X/Y blocks (first one strided) -> head."""
    inputs = image_input(input_shape)
    x = _conv_bn(inputs, stem_width, 3, STAGE_STRIDE, "stem")
    for s, (width, blocks, gw, b) in enumerate(stages, start=1):
        for i in range(blocks):
            x = regnet_block(x, width, STAGE_STRIDE if i == 0 else 1, gw, b, se_ratio,
                             f"s{s}_b{i + 1}")
    return finish_classifier(inputs, x, name, num_classes, include_top, dropout,
                             classifier_activation)


def _check_design(depth, w0, wa, wm, group_width, bottleneck_ratio, se_ratio, stem_width):
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer; got {depth!r}")
    if not isinstance(w0, int) or w0 < QUANT or w0 % QUANT:
        raise ValueError(f"w0 must be a positive multiple of {QUANT}; got {w0!r}")
    check_range("wa", wa, 0, 1e4, low_inclusive=True)
    check_range("wm", wm, 1, 1e3)
    if not isinstance(group_width, int) or group_width < 1:
        raise ValueError(f"group_width must be a positive integer; got {group_width!r}")
    check_range("bottleneck_ratio", bottleneck_ratio, 0, 16)
    check_range("se_ratio", se_ratio, 0, 1, low_inclusive=True)
    if not isinstance(stem_width, int) or stem_width < 1:
        raise ValueError(f"stem_width must be a positive integer; got {stem_width!r}")


@register_model("regnet", "RegNet", 224, alphas=(1.0,))
def regnet(input_shape, num_classes=1000, include_top=True, dropout=0.0, alpha=1.0,
           classifier_activation=None, depth=22, w0=24, wa=24.48, wm=2.54, group_width=16,
           bottleneck_ratio=1.0, se_ratio=0.0, stem_width=32, width_rounding="pycls"):
    """Any point of the RegNet design space (defaults: RegNetX-400MF).

    bottleneck_ratio is pycls's BOT_MUL (bottleneck width = width * ratio; the paper's b is
    its inverse); se_ratio > 0 makes it a RegNetY.
    """
    _check_design(depth, w0, wa, wm, group_width, bottleneck_ratio, se_ratio, stem_width)
    stages = regnet_stages(depth, w0, wa, wm, group_width, bottleneck_ratio, width_rounding)
    return build_regnet("regnet", input_shape, stages, se_ratio, stem_width, num_classes,
                        include_top, dropout, classifier_activation)


def _register_named(name):
    d = design(name)

    @register_model(name, "RegNet", 224, alphas=(1.0,))
    def build(input_shape, num_classes=1000, include_top=True, dropout=0.0, alpha=1.0,
              classifier_activation=None, width_rounding="pycls"):
        stages = regnet_stages(d["depth"], d["w0"], d["wa"], d["wm"], d["group_width"],
                               d["bottleneck_ratio"], width_rounding)
        return build_regnet(name, input_shape, stages, d["se_ratio"], 32, num_classes,
                            include_top, dropout, classifier_activation)

    build.__name__ = name
    build.__doc__ = f"pycls {name} (design {d}); width_rounding='torchvision' = torchvision's."
    return build


for _name in REGNET_DESIGNS:
    globals()[_name] = _register_named(_name)


# ---------------------------------------------------------------- complexity, constraints


def regnet_complexity(stages, se_ratio=0.0, stem_width=32, resolution=224, num_classes=1000):
    """pycls-style complexity computed without building a model.

    Returns dict(macs, flops, trainable_params, conv_activations): macs = multiply-adds
    (our profiler's count); flops = pycls's number (macs plus one add per bias output);
    trainable_params = weights + biases + BN gamma/beta; conv_activations = conv/FC
    output elements (pycls `acts`, the paper's "activations").
    """
    cx = {"macs": 0, "bias": 0, "params": 0, "acts": 0}

    def conv(size, w_in, w_out, k, stride=1, groups=1, bias=False, bn=True):
        out = (size - 1) // stride + 1  # "same" padding
        hw = out * out
        cx["macs"] += k * k * w_in * w_out * hw // groups
        cx["params"] += k * k * w_in * w_out // groups + (w_out if bias else 0)
        cx["params"] += 2 * w_out if bn else 0
        cx["bias"] += w_out * hw if bias else 0
        cx["acts"] += w_out * hw
        return out

    size = conv(resolution, 3, stem_width, 3, STAGE_STRIDE)
    w_in = stem_width
    for width, blocks, gw, b in stages:
        for i in range(blocks):
            stride = STAGE_STRIDE if i == 0 else 1
            w_b = int(round(width * b))
            if w_in != width or stride != 1:
                conv(size, w_in, width, 1, stride)
            conv(size, w_in, w_b, 1)
            out = conv(size, w_b, w_b, 3, stride, groups=w_b // gw)
            w_se = int(round(w_in * se_ratio))
            if w_se:
                conv(1, w_b, w_se, 1, bias=True, bn=False)
                conv(1, w_se, w_b, 1, bias=True, bn=False)
            size = conv(out, w_b, width, 1)
            w_in = width
    if num_classes:
        conv(1, w_in, num_classes, 1, bias=True, bn=False)
    return {"macs": cx["macs"], "flops": cx["macs"] + cx["bias"],
            "trainable_params": cx["params"], "conv_activations": cx["acts"]}


def conv_activations(profile):
    """The paper's activations: elements of every conv/FC output (layers that do MACs)."""
    if "conv_activations" in profile:
        return profile["conv_activations"]
    return sum(row["activations"] for row in profile["layers"] if row["macs"] > 0)


# RegNet paper (arXiv:2003.13678) Sec. 4, Fig. 12: fits to the best models, with
# activations and params in millions and flops in billions (multiply-adds).
ACTIVATIONS_FIT = 6.5  # activations <= 6.5 * sqrt(flops)
PARAMS_FIT = (3.0, 5.5)  # params <= 3.0 + 5.5 * flops


def regnet_constraints(profile):
    """Check a profile (profile_model output, or regnet_complexity output) against the
    paper's complexity fits: activations (M) <= 6.5 * sqrt(flops (B)) and
    params (M) <= 3.0 + 5.5 * flops (B)."""
    flops_b = profile["macs"] / 1e9
    params_m = profile["trainable_params"] / 1e6
    acts_m = conv_activations(profile) / 1e6
    max_acts = ACTIVATIONS_FIT * math.sqrt(flops_b)
    max_params = PARAMS_FIT[0] + PARAMS_FIT[1] * flops_b
    acts_ok, params_ok = acts_m <= max_acts, params_m <= max_params
    return {"flops_b": flops_b, "params_m": params_m, "activations_m": acts_m,
            "max_activations_m": max_acts, "max_params_m": max_params,
            "activations_ok": acts_ok, "params_ok": params_ok, "ok": acts_ok and params_ok}


# The RegNet design space (paper Sec. 3.3): d < 64, w0 < 256, 0 < wa <= 256,
# 1.5 <= wm <= 3; b and g as in AnyNetX: b in {1, 2, 4}, g in {1, 2, 4, 8, 16, 32}.
SPACE = {"depth": (1, 63), "w0": (QUANT, 248), "wa": (0.1, 256.0), "wm": (1.5, 3.0),
         "b": (1, 2, 4), "g": (1, 2, 4, 8, 16, 32)}


def _log_uniform(rng, low, high):
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def sample_regnet(rng, flops_range=(360e6, 440e6), resolution=224, num_stages=4,
                  max_tries=100000):
    """Draw a random design from the RegNet space whose MACs lie in `flops_range`.

    rng: a numpy Generator. Depth is uniform, w0 / wa / wm log-uniform (as pycls's
    regnet_sampler), w0 a multiple of 8, wa and wm to 0.1 / 0.001 like pycls; designs
    whose quantized widths skip a stage or do not give `num_stages` stages are redrawn
    (pycls check_regnet_constraints). Returns the kwargs of create_model("regnet", ...).
    """
    low, high = flops_range
    for _ in range(max_tries):
        w0 = int(round(_log_uniform(rng, *SPACE["w0"]) / QUANT)) * QUANT
        d = {
            "depth": int(rng.integers(SPACE["depth"][0], SPACE["depth"][1] + 1)),
            "w0": min(max(w0, SPACE["w0"][0]), SPACE["w0"][1]),
            "wa": round(_log_uniform(rng, *SPACE["wa"]), 1),
            "wm": round(_log_uniform(rng, *SPACE["wm"]), 3),
            "group_width": int(rng.choice(SPACE["g"])),
            "bottleneck_ratio": 1.0 / int(rng.choice(SPACE["b"])),
        }
        _, _, stages_found, stages_possible = generate_regnet(d["wa"], d["w0"], d["wm"], d["depth"])
        if stages_found != stages_possible or (num_stages and stages_found != num_stages):
            continue
        stages = regnet_stages(d["depth"], d["w0"], d["wa"], d["wm"], d["group_width"],
                               d["bottleneck_ratio"])
        if low <= regnet_complexity(stages, resolution=resolution)["macs"] <= high:
            return d
    raise ValueError(f"no RegNet design with MACs in {flops_range} after {max_tries} draws")
