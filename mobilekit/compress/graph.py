"""Edit a functional tf_keras model through its config, then rebuild it with weights.

Channel pruning, low-rank factorisation and the XNNPACK sparse layout all change a few
layers of an existing network (a width, an inserted layer) and keep the rest: editing the
`get_config()` graph and calling `Model.from_config` gives a fresh model built from real
layers with the same layer names, and `rebuild` copies (or lets the caller slice) the
weights by name.
"""
import copy

from mobilekit.keras import keras


class Graph:
    """The layer entries of a functional model's config, with producer/consumer links.

    Every layer must be called exactly once (one inbound node): a shared layer would tie
    the channels of two places of the network, which none of the edits here handle.
    """

    def __init__(self, model):
        if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
            raise ValueError(f"expected a functional tf_keras model; got "
                             f"{type(model).__name__} (subclassed and Keras 3 models "
                             "cannot be edited)")
        self.model = model
        self.config = copy.deepcopy(model.get_config())
        self.entries = {e["name"]: e for e in self.config["layers"]}
        for entry in self.config["layers"]:
            if len(entry["inbound_nodes"]) > 1:
                raise ValueError(f"layer {entry['name']!r} is called "
                                 f"{len(entry['inbound_nodes'])} times; only models whose "
                                 "layers are each used once can be edited")
        self.consumers = {name: [] for name in self.entries}
        for entry in self.config["layers"]:
            for producer in self.producers(entry["name"]):
                self.consumers[producer].append(entry["name"])
        self.outputs = {ref[0] for ref in self.config["output_layers"]}

    def producers(self, name):
        """Names of the layers whose outputs `name` takes, in argument order."""
        nodes = self.entries[name]["inbound_nodes"]
        return [ref[0] for ref in nodes[0]] if nodes else []

    def class_name(self, name):
        return self.entries[name]["class_name"]

    def layer_config(self, name):
        return self.entries[name]["config"]

    def layer(self, name):
        return self.model.get_layer(name)

    def names(self):
        return [e["name"] for e in self.config["layers"]]

    def insert_before(self, name, entry):
        """Insert `entry` (a layer entry without inbound nodes) between `name` and its inputs."""
        target = self.entries[name]
        entry = dict(entry, inbound_nodes=copy.deepcopy(target["inbound_nodes"]))
        target["inbound_nodes"] = [[[entry["name"], 0, 0, {}]]]
        index = self.config["layers"].index(target)
        self.config["layers"].insert(index, entry)
        self.entries[entry["name"]] = entry
        target.pop("build_config", None)  # its input shape may have changed

    def build(self):
        """A new (untrained) model from the edited config."""
        for entry in self.config["layers"]:
            if entry["class_name"] != "InputLayer":
                entry.pop("build_config", None)  # shapes come from the call graph
        return keras.Model.from_config(copy.deepcopy(self.config))


def layer_entry(class_name, name, config):
    """A config entry for a built-in Keras layer."""
    return {"module": "keras.layers", "class_name": class_name, "registered_name": None,
            "config": dict(config, name=name), "name": name}


def rebuild(graph, weights_for=None):
    """Build the edited graph and fill every layer's weights.

    `weights_for(new_layer)` returns a list of arrays for a layer, or None to copy the
    weights of the original layer of the same name (a layer new to the graph keeps its
    initial weights when it returns None).
    """
    new = graph.build()
    original = {layer.name: layer for layer in graph.model.layers}
    for layer in new.layers:
        weights = weights_for(layer) if weights_for else None
        if weights is None and layer.name in original:
            weights = original[layer.name].get_weights()
        if weights:
            layer.set_weights(weights)
    return new
