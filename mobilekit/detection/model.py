"""FaceBoxes (Zhang et al., IJCB 2017; arXiv:1708.05234) as a functional tf_keras model.

Layer table of the official code (sfzhang15/FaceBoxes, zisianw/FaceBoxes.PyTorch):
RDCL = conv1 7x7/4 (24, C.ReLU -> 48) . max-pool 3x3/2 . conv2 5x5/2 (64, C.ReLU -> 128)
. max-pool 3x3/2; MSCL = 3 Inception modules (4 branches x 32 = 128 ch) . conv3_1 1x1 128
. conv3_2 3x3/2 256 . conv4_1 1x1 128 . conv4_2 3x3/2 256; 3x3 heads (with bias) on
inception3 / conv3_2 / conv4_2 (strides 32 / 64 / 128).

Strided convs and pools use explicit ZeroPadding2D + 'valid' (PyTorch's symmetric padding;
TF 'same' pads bottom/right only), and the Inception avg-pool divides by 9 at borders
(PyTorch count_include_pad). Convs are conv -> BN -> act without bias.

Input: RGB scaled to [-1, 1] (see mobilekit.detection.data.preprocess), not the official
BGR mean subtraction, so the zoo backbones and int8 export see their usual range.
Outputs (training form): loc [N, A, 4] regression deltas and conf [N, A, 2] logits
(background, face), anchors in mobilekit.detection.anchors order.
"""
from mobilekit.detection.anchors import MIN_SIZES, STEPS, anchors_per_cell
from mobilekit.keras import keras, layers
from mobilekit.layers import make_divisible
from mobilekit.layers.crelu import crelu

BN_EPSILON = 1e-5  # PyTorch BatchNorm2d defaults, as in the official port
BN_MOMENTUM = 0.9  # = PyTorch momentum 0.1: moving statistics settle in tens of steps
# Zoo backbone -> the layer whose output is its stride-32 feature map (before any final
# 1x1 expansion, which would only fatten the heads).
BACKBONE_ENDPOINTS = {
    "mobilenet_v1": "block13_pw_act",
    "mobilenet_v2": "block16_project_bn",
    "mobilenet_v3_large": "block14_project_bn",
    "mobilenet_v3_small": "block10_project_bn",
}


def _ch(channels, alpha):
    return channels if alpha == 1.0 else make_divisible(channels * alpha, 8)


def _conv_bn(x, filters, kernel, strides, name, act="relu"):
    """conv (no bias) -> BN -> ReLU / C.ReLU / none; symmetric padding like PyTorch."""
    pad = kernel // 2
    if strides > 1 and pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    x = layers.Conv2D(filters, kernel, strides=strides, use_bias=False,
                      padding="valid" if strides > 1 else "same", name=name)(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                  name=f"{name}_bn")(x)
    if act == "crelu":
        return crelu(x, name)
    if act == "relu":
        return layers.ReLU(name=f"{name}_relu")(x)
    return x


def _max_pool(x, name):
    # Zero padding is exact here: the input is post-ReLU (>= 0).
    x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return layers.MaxPooling2D(3, 2, padding="valid", name=name)(x)


def inception(x, alpha, name):
    """FaceBoxes Inception: 1x1 | avgpool3 . 1x1 | 1x1 . 3x3 | 1x1 . 3x3 . 3x3 (32 ch each)."""
    c32, c24 = _ch(32, alpha), _ch(24, alpha)
    a = _conv_bn(x, c32, 1, 1, f"{name}_1x1")
    b = layers.ZeroPadding2D(1, name=f"{name}_pool_pad")(x)
    b = layers.AveragePooling2D(3, 1, padding="valid", name=f"{name}_pool")(b)
    b = _conv_bn(b, c32, 1, 1, f"{name}_pool_1x1")
    c = _conv_bn(x, c24, 1, 1, f"{name}_3x3_reduce")
    c = _conv_bn(c, c32, 3, 1, f"{name}_3x3")
    d = _conv_bn(x, c24, 1, 1, f"{name}_3x3x2_reduce")
    d = _conv_bn(d, c32, 3, 1, f"{name}_3x3x2_a")
    d = _conv_bn(d, c32, 3, 1, f"{name}_3x3x2_b")
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([a, b, c, d])


def faceboxes_features(inputs, alpha=1.0):
    """RDCL + MSCL -> the three detection maps (strides 32, 64, 128)."""
    x = _conv_bn(inputs, _ch(24, alpha), 7, 4, "conv1", act="crelu")
    x = _max_pool(x, "pool1")
    x = _conv_bn(x, _ch(64, alpha), 5, 2, "conv2", act="crelu")
    x = _max_pool(x, "pool2")
    for i in (1, 2, 3):
        x = inception(x, alpha, f"inception{i}")
    f32 = x
    return [f32] + _extra_maps(f32, alpha)


def _extra_maps(x, alpha):
    """conv3_1/3_2 and conv4_1/4_2: the stride-64 and stride-128 maps."""
    x = _conv_bn(x, _ch(128, alpha), 1, 1, "conv3_1")
    f64 = _conv_bn(x, _ch(256, alpha), 3, 2, "conv3_2")
    x = _conv_bn(f64, _ch(128, alpha), 1, 1, "conv4_1")
    f128 = _conv_bn(x, _ch(256, alpha), 3, 2, "conv4_2")
    return [f64, f128]


def backbone_features(input_shape, backbone, alpha):
    """A zoo classifier's stride-32 map + FaceBoxes' extra stride-2 convs; returns (inputs, maps)."""
    from mobilekit.errors import unknown_name
    from mobilekit.zoo.registry import create_model

    if backbone not in BACKBONE_ENDPOINTS:
        raise unknown_name("faceboxes backbone", backbone, BACKBONE_ENDPOINTS)
    base = create_model(backbone, input_shape=tuple(input_shape), alpha=alpha, include_top=False)
    f32 = base.get_layer(BACKBONE_ENDPOINTS[backbone]).output
    return base.inputs[0], [f32] + _extra_maps(f32, alpha)


def detection_heads(maps, min_sizes=MIN_SIZES, num_classes=2):
    """3x3 loc / conf convs (with bias) per map, flattened to loc [N, A, 4], conf [N, A, C]."""
    locs, confs = [], []
    for i, (fmap, k) in enumerate(zip(maps, anchors_per_cell(min_sizes)), start=1):
        loc = layers.Conv2D(4 * k, 3, padding="same", name=f"head{i}_loc")(fmap)
        conf = layers.Conv2D(num_classes * k, 3, padding="same", name=f"head{i}_conf")(fmap)
        locs.append(layers.Reshape((-1, 4), name=f"head{i}_loc_flat")(loc))
        confs.append(layers.Reshape((-1, num_classes), name=f"head{i}_conf_flat")(conf))
    loc = layers.Concatenate(axis=1, name="loc")(locs)
    conf = layers.Concatenate(axis=1, name="conf")(confs)
    return loc, conf


def build_faceboxes(input_shape=(1024, 1024, 3), alpha=1.0, backbone=None, include_top=True,
                    num_classes=2):
    """The training-form model: outputs [loc, conf]; include_top=False gives the 3 maps."""
    check_input_size(input_shape[:2])
    if backbone is None:
        inputs = layers.Input(shape=tuple(input_shape), name="input")
        maps = faceboxes_features(inputs, alpha)
        name = "faceboxes" if alpha == 1.0 else f"faceboxes_{alpha:g}"
    else:
        inputs, maps = backbone_features(input_shape, backbone, alpha)
        name = f"faceboxes_{backbone}_{alpha:g}"
    if not include_top:
        return keras.Model(inputs, maps, name=f"{name}_features")
    if len(maps) != len(STEPS):
        raise RuntimeError(f"expected {len(STEPS)} detection maps; got {len(maps)}")
    return keras.Model(inputs, list(detection_heads(maps, num_classes=num_classes)), name=name)


def check_input_size(input_hw):
    """ValueError unless both sides are multiples of STEPS[0] (32).

    Why 32 and not the total stride 128: the stride-32 map is where 21 of each cell's 23
    anchors sit, and whole cells there keep every anchor on the image and the layers' padding
    symmetric (the int8 stem's space-to-depth needs whole 4-pixel blocks too); the two coarse
    maps take ceil(size / step) cells, as the official code does. 640x480 (VGA, 3.75 x 128)
    is fine; 128-multiples would refuse it."""
    h, w = (int(v) for v in input_hw)
    if h % STEPS[0] or w % STEPS[0]:
        raise ValueError(f"faceboxes input sides must be multiples of {STEPS[0]} (the first "
                         f"detection map's stride); got {w}x{h} (WxH), e.g. use "
                         f"{_round(w)}x{_round(h)}")


def _round(side):
    return max(STEPS[0], round(side / STEPS[0]) * STEPS[0])


def map_sizes(model):
    """(rows, cols) of the detection maps of a built model, read from its head convs
    (named `head{i}_loc`, or `quant_head{i}_loc` once wrapped for QAT)."""
    names = {layer.name for layer in model.layers}
    prefix = "quant_" if "head1_loc" not in names and "quant_head1_loc" in names else ""
    return [tuple(model.get_layer(f"{prefix}head{i}_loc").output.shape[1:3]) for i in (1, 2, 3)]


def with_input_size(model, input_hw):
    """The same detector (same weights) built for another input (height, width): FaceBoxes
    is fully convolutional, so only the detection maps and the anchor count change."""
    h, w = (int(v) for v in input_hw)
    if tuple(model.inputs[0].shape[1:3]) == (h, w):
        return model
    check_input_size((h, w))
    if any(type(layer).__name__.startswith("Quantize") for layer in model.layers):
        raise ValueError("a quantization-aware-trained detector keeps its training input size; "
                         "train (or export) the float run at the new size instead")
    config = model.get_config()
    inputs = [layer for layer in config["layers"] if layer["class_name"] == "InputLayer"]
    if len(inputs) != 1:
        raise ValueError(f"expected one input layer in {model.name}; got {len(inputs)}")
    shape = inputs[0]["config"]["batch_input_shape"]
    inputs[0]["config"]["batch_input_shape"] = [shape[0], h, w, shape[-1]]
    resized = keras.Model.from_config(config)
    resized.set_weights(model.get_weights())
    return resized
