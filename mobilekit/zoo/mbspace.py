"""A MobileNet-style block design space (MnasNet / MobileNetV3 search space, arXiv:1807.11626,
arXiv:1905.02244): a point of it is a *spec*, plain data that a model card can hold.

A spec is a dict (or its JSON text, or the path of a .json file holding it):

  {"stem": 16, "head": 576,
   "stages": [{"channels": 24, "stride": 2, "depth": 2, "kernel": 5, "expansion": 4,
               "se": true, "width_mult": 1.0, "act": "hswish"}, ...]}

Each stage is `depth` inverted-residual blocks (the first strided), all with the stage's
kernel, expansion (expanded = expansion * block input width), squeeze-excite (1/4 of the
expanded width, hard-sigmoid gate) and activation; the stage's output width is
make_divisible(channels * width_mult * alpha). Stem: 3x3/2 conv (h-swish); head: 1x1 conv
to `head` (scaled by alpha when alpha > 1) -> global pool -> classifier.
"""
import json
from pathlib import Path

from mobilekit.errors import check_choice
from mobilekit.layers import conv_bn_act, inverted_residual, make_divisible
from mobilekit.zoo.common import finish_classifier, image_input
from mobilekit.zoo.registry import register_model

KERNELS = (3, 5, 7)
EXPANSIONS = (3, 4, 6)
STAGE_ACTS = ("relu", "hswish")
STAGE_KEYS = ("channels", "stride", "depth", "kernel", "expansion", "se", "width_mult", "act")
SE_RATIO = 0.25

# (channels, stride, depth, kernel, expansion, se, width_mult, act): a MobileNetV3-Small-like
# default point (the spec create_model("mbspace") builds when none is given).
DEFAULT_STAGES = [
    (24, 2, 2, 3, 4, False, 1.0, "relu"),
    (40, 2, 3, 5, 4, True, 1.0, "hswish"),
    (48, 1, 2, 5, 3, True, 1.0, "hswish"),
    (96, 2, 3, 5, 6, True, 1.0, "hswish"),
]
DEFAULT_SPEC = {"stem": 16, "head": 576,
                "stages": [dict(zip(STAGE_KEYS, row)) for row in DEFAULT_STAGES]}


def load_spec(spec):
    """A spec dict from a dict, JSON text or a .json file path; validated (ValueError)."""
    if spec is None:
        spec = DEFAULT_SPEC
    if isinstance(spec, (str, Path)):
        text = str(spec).strip()
        if not text.startswith("{"):
            path = Path(text)
            if not path.is_file():
                raise ValueError(f"mbspace spec must be a dict, JSON text or a .json file; "
                                 f"{text!r} is none of these")
            text = path.read_text()
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"mbspace spec is not valid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"mbspace spec must be a dict; got {type(spec).__name__}")
    check_spec(spec)
    return spec


def _positive_int(what, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer; got {value!r}")


def check_spec(spec):
    unknown = set(spec) - {"stem", "head", "stages"}
    if unknown:
        raise ValueError(f"unknown mbspace spec key {sorted(unknown)[0]!r}; accepted: "
                         "stem, head, stages")
    _positive_int("spec stem", spec.get("stem", 16))
    _positive_int("spec head", spec.get("head", 576))
    stages = spec.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ValueError("mbspace spec needs a non-empty list of stages")
    for i, stage in enumerate(stages):
        where = f"spec stage {i}"
        if not isinstance(stage, dict) or set(stage) != set(STAGE_KEYS):
            raise ValueError(f"{where} must have exactly the keys {', '.join(STAGE_KEYS)}; "
                             f"got {stage!r}")
        _positive_int(f"{where} channels", stage["channels"])
        _positive_int(f"{where} depth", stage["depth"])
        check_choice(f"{where} stride", stage["stride"], (1, 2))
        check_choice(f"{where} kernel", stage["kernel"], KERNELS)
        check_choice(f"{where} expansion", stage["expansion"], EXPANSIONS)
        check_choice(f"{where} se", stage["se"], (True, False))
        check_choice(f"{where} act", stage["act"], STAGE_ACTS)
        w = stage["width_mult"]
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not 0 < w <= 4:
            raise ValueError(f"{where} width_mult must be in (0, 4]; got {w!r}")


@register_model("mbspace", "MobileNet search space", 224)
def mbspace(input_shape, num_classes=1000, include_top=True, dropout=0.2, alpha=1.0,
            classifier_activation=None, spec=None):
    """One point of the MobileNet-style block space; `spec` as in the module docstring."""
    spec = load_spec(spec)
    inputs = image_input(input_shape)
    x = conv_bn_act(inputs, spec.get("stem", 16), 3, 2, "hswish", "stem")  # fixed, as in V3
    for s, st in enumerate(spec["stages"], start=1):
        out = make_divisible(st["channels"] * st["width_mult"] * alpha)
        for i in range(st["depth"]):
            expanded = make_divisible(x.shape[-1] * st["expansion"])
            se = make_divisible(expanded * SE_RATIO) if st["se"] else 0
            x = inverted_residual(x, expanded, out, st["kernel"], st["stride"] if i == 0 else 1,
                                  st["act"], se, se_gate="hsigmoid", name=f"s{s}_b{i + 1}")
    head = spec.get("head", 576)
    x = conv_bn_act(x, make_divisible(head * alpha) if alpha > 1 else head, 1, 1, "hswish",
                    "last_conv")
    return finish_classifier(inputs, x, "mbspace", num_classes, include_top, dropout,
                             classifier_activation)
