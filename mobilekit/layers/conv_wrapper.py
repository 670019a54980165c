"""A base for layers computed from a wrapped Conv2D's own weights."""
from mobilekit.keras import keras, layers


class ConvWrapper(layers.Layer):
    """A layer built around a Conv2D whose weights it uses (shared: a clone keeps the trained
    ones), serialised with it; a deserialised one builds the conv so saved weights load."""

    def __init__(self, conv, **kwargs):
        super().__init__(**kwargs)
        self.conv = conv

    def build(self, input_shape):
        if not self.conv.built:
            self.conv.build(input_shape)
        super().build(input_shape)

    def get_config(self):
        return {**super().get_config(), "conv": keras.layers.serialize(self.conv)}

    @classmethod
    def from_config(cls, config):
        config["conv"] = keras.layers.deserialize(config["conv"])
        return cls(**config)
