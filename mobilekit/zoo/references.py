"""Big reference models, for scale next to the mobile zoo: VGG16, ResNet-50, Xception.

Layer names follow keras.applications so its weight files map by name. Width is fixed
(alpha 1.0 only): these are yardsticks, not mobile designs.
"""
from mobilekit.keras import keras, layers
from mobilekit.layers import batch_norm, conv_bn_act
from mobilekit.zoo.common import finish_classifier, image_input
from mobilekit.zoo.registry import register_model

# VGG configuration D (arXiv:1409.1556 Table 1): conv widths per block, 3x3 convs, then a 2x2 pool.
VGG16_BLOCKS = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]


@register_model("vgg16", "VGG", 224, alphas=(1.0,))
def vgg16(input_shape, num_classes=1000, include_top=True, dropout=0.5, alpha=1.0,
          classifier_activation=None):
    """VGG-16 (config D) as torchvision / keras.applications: 3x3 convs with bias and ReLU, no
    BN, 2x2 max-pools, then flatten -> FC 4096 -> FC 4096 -> classifier (dropout after each
    4096 FC as torchvision; keras.applications has none). With the top, the parameter count
    depends on the input size (the first FC sees the flattened 512 x H/32 x W/32 map);
    138,357,544 at 224.

    Initialised as torchvision does (He normal on fan-out for the convs, N(0, 0.01) for the
    FCs): with Glorot weights and no BatchNorm the signal shrinks ~40x more through the 13
    ReLU convs. Even so it needs its card's recipe (Adam 1e-4, no dropout) to leave chance on
    the synthetic set (docs/training_recipes.md)."""
    # A fresh initializer per layer: one shared instance gives same-shaped layers equal weights.
    def conv_init():
        return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")

    def fc_init():
        return keras.initializers.RandomNormal(0.0, 0.01)

    inputs = image_input(input_shape)
    x = inputs
    for b, (filters, convs) in enumerate(VGG16_BLOCKS, start=1):
        for c in range(1, convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                              kernel_initializer=conv_init(), name=f"block{b}_conv{c}")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
    if include_top:
        x = layers.Flatten(name="flatten")(x)
        for i in (1, 2):
            x = layers.Dense(4096, activation="relu", kernel_initializer=fc_init(),
                             name=f"fc{i}")(x)
            if dropout:
                x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
        x = layers.Dense(num_classes, activation=classifier_activation,
                         kernel_initializer=fc_init(), name="head_logits")(x)
    return keras.Model(inputs, x, name="vgg16")


RESNET50_STAGES = [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]  # (width, blocks, stride)
RESNET_BN_EPSILON = 1.001e-5  # keras.applications' value


def _resnet_conv_bn(x, filters, kernel, stride, name, act, use_bias):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=use_bias,
                      name=f"{name}_conv")(x)
    x = batch_norm(x, f"{name}_bn", epsilon=RESNET_BN_EPSILON)
    return layers.ReLU(name=f"{name}_relu")(x) if act else x


def resnet_bottleneck(x, width, stride, name, stride_in_1x1=False, use_bias=False):
    """1x1 -> 3x3 -> 1x1 (4 x width), + shortcut (1x1 + BN on the first block), ReLU.

    The stride sits on the 3x3 (torchvision/pycls "v1.5") or, with stride_in_1x1, on the
    first 1x1 (the original Caffe / keras.applications ResNet50).
    """
    out = 4 * width
    shortcut = x
    if stride != 1 or x.shape[-1] != out:
        shortcut = _resnet_conv_bn(x, out, 1, stride, f"{name}_0", False, use_bias)
    s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
    y = _resnet_conv_bn(x, width, 1, s1, f"{name}_1", True, use_bias)
    y = _resnet_conv_bn(y, width, 3, s3, f"{name}_2", True, use_bias)
    y = _resnet_conv_bn(y, out, 1, 1, f"{name}_3", False, use_bias)
    x = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(x)


@register_model("resnet50", "ResNet", 224, alphas=(1.0,))
def resnet50(input_shape, num_classes=1000, include_top=True, dropout=0.0, alpha=1.0,
             classifier_activation=None, stride_in_1x1=False, use_bias=False):
    """ResNet-50 as torchvision / pycls (default: bias-free convs + BN, stride on the 3x3,
    25,557,032 params). stride_in_1x1=True, use_bias=True is keras.applications.ResNet50
    (biased convs, stride on the first 1x1: 25,583,592 trainable)."""
    inputs = image_input(input_shape)
    x = _resnet_conv_bn(inputs, 64, 7, 2, "conv1", True, use_bias)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    for s, (width, blocks, stride) in enumerate(RESNET50_STAGES, start=2):
        for i in range(1, blocks + 1):
            x = resnet_bottleneck(x, width, stride if i == 1 else 1, f"conv{s}_block{i}",
                                  stride_in_1x1, use_bias)
    return finish_classifier(inputs, x, "resnet50", num_classes, include_top, dropout,
                             classifier_activation)


def _sep_bn(x, filters, name, relu_before=False):
    """[ReLU ->] separable 3x3 (no activation between depthwise and pointwise) -> BN."""
    if relu_before:
        x = layers.ReLU(name=f"{name}_act")(x)
    x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
    return batch_norm(x, f"{name}_bn")


def _xception_module(x, filters, name, first_relu=True):
    """Entry/exit module: two separable convs + max-pool/2, plus a 1x1/2 conv shortcut."""
    shortcut = layers.Conv2D(filters[1], 1, strides=2, padding="same", use_bias=False,
                             name=f"{name}_shortcut")(x)
    shortcut = batch_norm(shortcut, f"{name}_shortcut_bn")
    x = _sep_bn(x, filters[0], f"{name}_sepconv1", relu_before=first_relu)
    x = _sep_bn(x, filters[1], f"{name}_sepconv2", relu_before=True)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
    return layers.Add(name=f"{name}_add")([x, shortcut])


@register_model("xception", "Xception", 299, min_resolution=71, alphas=(1.0,))
def xception(input_shape, num_classes=1000, include_top=True, dropout=0.0, alpha=1.0,
             classifier_activation=None):
    """Xception (arXiv:1610.02357) with keras.applications' structure: entry flow (conv 32/2,
    conv 64, both 'valid'; modules 128/256/728), middle flow 8 x 3 separable 728 with identity
    shortcuts, exit flow (module 728/1024, separable 1536, separable 2048, each BN + ReLU)."""
    inputs = image_input(input_shape)
    x = conv_bn_act(inputs, 32, 3, 2, "relu", "block1_conv1", padding="valid")
    x = conv_bn_act(x, 64, 3, 1, "relu", "block1_conv2", padding="valid")
    x = _xception_module(x, (128, 128), "block2", first_relu=False)
    x = _xception_module(x, (256, 256), "block3")
    x = _xception_module(x, (728, 728), "block4")
    for b in range(5, 13):
        y = x
        for c in range(1, 4):
            y = _sep_bn(y, 728, f"block{b}_sepconv{c}", relu_before=True)
        x = layers.Add(name=f"block{b}_add")([y, x])
    x = _xception_module(x, (728, 1024), "block13")
    x = _sep_bn(x, 1536, "block14_sepconv1")
    x = layers.ReLU(name="block14_sepconv1_act")(x)
    x = _sep_bn(x, 2048, "block14_sepconv2")
    x = layers.ReLU(name="block14_sepconv2_act")(x)
    return finish_classifier(inputs, x, "xception", num_classes, include_top, dropout,
                             classifier_activation)
