"""C.ReLU (Shang et al., 2016; FaceBoxes' RDCL): ReLU(concat[x, -x]).

Built from a registered `Negate` layer plus builtin Concatenate and ReLU, so the
TFLite graph holds NEG / CONCATENATION / RELU (all builtin) and no Lambda is needed.
"""
from mobilekit.keras import layers, register


@register("mobilekit")
class Negate(layers.Layer):
    """-x. A layer (not a Lambda or a raw op) so models stay serializable and QAT can
    give it an output quantizer."""

    QUANT = "output"

    def call(self, inputs):
        return -inputs


def crelu(x, name):
    """concat([x, -x]) -> ReLU: doubles the channels at no MAC cost."""
    neg = Negate(name=f"{name}_neg")(x)
    x = layers.Concatenate(axis=-1, name=f"{name}_concat")([x, neg])
    return layers.ReLU(name=f"{name}_relu")(x)
