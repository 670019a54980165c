"""SqueezeNet 1.0 (arXiv:1602.07360) and 1.1 (forresti/SqueezeNet SqueezeNet_v1.1).

Layer for layer as torchvision's squeezenet.py (trainable params equal torchvision's):
biased convs, no BatchNorm, conv1 without padding, Caffe-style ceil-mode max-pools, and
a head of dropout -> conv10 1x1 (num_classes) -> ReLU -> global average pool, and
torchvision's initialisation (He uniform; conv10 normal with std 0.01).
See shared/reference/backbones_notes.md §6 and models/squeezenet_1_*.toml.
"""
from mobilekit.keras import keras, layers
from mobilekit.layers import conv_bn_act
from mobilekit.layers.fire import fire_module
from mobilekit.zoo.common import image_input
from mobilekit.zoo.registry import register_model

# (squeeze, expand1x1, expand3x3) of fire2..fire9, and after which fires a max-pool comes.
FIRES = [(16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128),
         (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)]
POOL_AFTER = {"1_0": (4, 8), "1_1": (3, 5)}
CONV1 = {"1_0": (96, 7), "1_1": (64, 3)}


def _pool_size(n, pool, stride, ceil):
    steps = n - pool
    return (-(-steps // stride) if ceil else steps // stride) + 1


def _same_pad_before(n, pool, stride):
    """Rows Keras "same" pooling pads before the input (it puts the odd one after)."""
    return max((-(-n // stride) - 1) * stride + pool - n, 0) // 2


def ceil_max_pool(x, name, pool=3, stride=2):
    """MaxPool with Caffe/torchvision ceil_mode=True output size.

    Ceil mode lets the last window hang over the end. For 3x3/2 that is exactly Keras
    "valid" on odd sizes and "same" (which pads only at the end) on even sizes, so the
    common cases are one plain MAX_POOL_2D. Otherwise we zero-pad at the end first:
    equal to ceil mode because every pooled input here follows a ReLU (>= 0).
    """
    h, w = x.shape[1], x.shape[2]
    want = (_pool_size(h, pool, stride, True), _pool_size(w, pool, stride, True))
    if want == (_pool_size(h, pool, stride, False), _pool_size(w, pool, stride, False)):
        return layers.MaxPooling2D(pool, stride, padding="valid", name=name)(x)
    same = (-(-h // stride), -(-w // stride))
    if want == same and _same_pad_before(h, pool, stride) == _same_pad_before(w, pool, stride) == 0:
        return layers.MaxPooling2D(pool, stride, padding="same", name=name)(x)
    pad = ((0, (want[0] - 1) * stride + pool - h), (0, (want[1] - 1) * stride + pool - w))
    x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    return layers.MaxPooling2D(pool, stride, padding="valid", name=name)(x)


def _squeezenet(version, input_shape, num_classes, include_top, dropout, classifier_activation):
    filters, kernel = CONV1[version]
    inputs = image_input(input_shape)
    x = conv_bn_act(inputs, filters, kernel, 2, "relu", "conv1", bn=False, padding="valid",
                    kernel_initializer="he_uniform")
    x = ceil_max_pool(x, "pool1")
    for i, (s, e1, e3) in enumerate(FIRES, start=2):
        x = fire_module(x, s, e1, e3, f"fire{i}")
        if i in POOL_AFTER[version]:
            x = ceil_max_pool(x, f"pool{i}")
    name = f"squeezenet_{version}"
    if include_top:
        if dropout:
            x = layers.Dropout(dropout, name="head_dropout")(x)
        # The classifier is a 1x1 conv + ReLU *before* pooling (not a Dense after it),
        # started small as torchvision does (normal, std 0.01).
        x = conv_bn_act(x, num_classes, 1, act="relu", name="conv10", bn=False,
                        kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01))
        x = layers.GlobalAveragePooling2D(name="head_pool")(x)
        if classifier_activation is not None:
            x = layers.Activation(classifier_activation, name="head_activation")(x)
    return keras.Model(inputs, x, name=name)


@register_model("squeezenet_1_0", "SqueezeNet", 224, alphas=(1.0,))
def squeezenet_1_0(input_shape, num_classes=1000, include_top=True, dropout=0.5, alpha=1.0,
                   classifier_activation=None):
    """SqueezeNet 1.0: conv1 7x7/2 96, pools after conv1, fire4 and fire8."""
    return _squeezenet("1_0", input_shape, num_classes, include_top, dropout,
                       classifier_activation)


@register_model("squeezenet_1_1", "SqueezeNet", 224, alphas=(1.0,))
def squeezenet_1_1(input_shape, num_classes=1000, include_top=True, dropout=0.5, alpha=1.0,
                   classifier_activation=None):
    """SqueezeNet 1.1: conv1 3x3/2 64, pools after conv1, fire3 and fire5 (2.4x less compute)."""
    return _squeezenet("1_1", input_shape, num_classes, include_top, dropout,
                       classifier_activation)
