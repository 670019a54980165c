"""What every classifier builder shares: the input and the optional top."""
from mobilekit.keras import keras, layers
from mobilekit.layers import classifier_head


def image_input(input_shape, name="input"):
    return layers.Input(shape=input_shape, name=name)


def finish_classifier(inputs, features, name, num_classes, include_top, dropout,
                      classifier_activation, pre_head=None):
    """Add pool + dropout + Dense logits (when include_top) and wrap as a keras Model.

    `pre_head(x)` runs after pooling and before the dropout (e.g. MobileNetV3's 1280 FC).
    """
    x = features
    if include_top:
        x = layers.GlobalAveragePooling2D(name="head_pool")(x)
        if pre_head is not None:
            x = pre_head(x)
        x = classifier_head(x, num_classes, dropout, "head", classifier_activation, pool=False)
    return keras.Model(inputs, x, name=name)
