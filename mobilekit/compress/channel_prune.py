"""Structured channel pruning: remove whole filters and rebuild a smaller dense model.

Channels are grouped into *channel spaces*: the output of one Conv2D / Dense (its
*source*) followed through every layer that maps channel i to channel i (BatchNorm,
activations, depthwise convolutions, padding, pooling, dropout) up to the layers that
read the channels as their input dimension (the *consumers*: Conv2D, Dense). Removing
channel i of a space removes filter i of the source, entry i of every BN / depthwise in
between and input slice i of every consumer, which is exact when the channel's
contribution was zero.

Which spaces may be pruned (the classic safe choice for residual networks):
  * an Add / Multiply ties the spaces of its inputs; a tied space with two independent
    sources (a residual stream) is never pruned, so inverted residual blocks lose only
    their expanded (internal) channels;
  * squeeze-excite (GateScale): the gate's space follows the features' space, so the SE
    expand conv loses the same output channels and the SE reduce conv the same inputs;
  * a Concatenate, a model input or output, a grouped convolution, a channel-mixing or
    unknown layer (Reshape, Softmax, channel shuffle, custom layers) freezes the spaces
    it touches.

Filters are ranked by the L1 norm of the source kernel ("l1", Li et al. 2017) or by |gamma|
of the BatchNorm right after the source ("bn_gamma", network slimming, Liu et al. 2017).
One ratio of channels is removed from every prunable space; with `target_macs_fraction`
the ratio is found by bisection on the exact MAC count of the pruned network.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from mobilekit.compress.graph import Graph, rebuild
from mobilekit.errors import check_choice, check_range
from mobilekit.keras import layers

CRITERIA = ("l1", "bn_gamma")
_CHANNELWISE = (layers.BatchNormalization, layers.ReLU, layers.LeakyReLU, layers.ELU,
                layers.ThresholdedReLU, layers.Dropout, layers.SpatialDropout2D,
                layers.GaussianNoise, layers.GaussianDropout, layers.ZeroPadding2D,
                layers.Cropping2D, layers.MaxPooling2D, layers.AveragePooling2D,
                layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D,
                layers.UpSampling2D)
_TIES = (layers.Add, layers.Multiply, layers.Maximum, layers.Minimum, layers.Average,
         layers.Subtract)
_CHANNEL_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


@dataclass
class Space:
    """One channel space (see the module docstring)."""
    channels: int
    sources: list = field(default_factory=list)    # layers whose output filters it is
    followers: list = field(default_factory=list)  # sources that follow (SE expand conv)
    members: list = field(default_factory=list)    # channel-wise layers inside it
    consumers: list = field(default_factory=list)  # layers reading it as input channels
    frozen: list = field(default_factory=list)     # reasons it cannot be pruned

    @property
    def primary(self):
        return [s for s in self.sources if s not in self.followers]


@dataclass
class Group:
    """A prunable channel space, as `prunable_groups` reports it."""
    source: str
    channels: int
    followers: list
    members: list
    consumers: list


def _is_channelwise(layer):
    from mobilekit.layers.activations import HardSigmoid, HardSwish, Swish

    if isinstance(layer, layers.DepthwiseConv2D):
        return layer.depth_multiplier == 1
    if isinstance(layer, layers.BatchNormalization):
        return list(layer.axis) in ([3], [-1]) or layer.axis in (3, -1)
    if isinstance(layer, layers.Activation):
        return getattr(layer.activation, "__name__", "") not in _CHANNEL_MIXING_ACTIVATIONS
    return isinstance(layer, _CHANNELWISE + (HardSwish, HardSigmoid, Swish))


def _is_dense_conv(layer):
    """Conv2D / Dense whose kernel is (..., in, out) with full in x out connectivity."""
    if isinstance(layer, layers.Dense):
        return True
    return (type(layer) is layers.Conv2D and layer.groups == 1
            and layer.data_format == "channels_last")


class _Spaces:
    """Union-find over channel spaces, filled by one walk of the graph."""

    def __init__(self, graph):
        self.graph = graph
        self.parent, self.spaces, self.out_space = [], [], {}
        for name in graph.names():
            self._visit(name)
        for name in graph.outputs:
            self.get(self.out_space[name]).frozen.append(f"model output {name}")

    def new(self, channels, source=None, frozen=None):
        self.parent.append(len(self.parent))
        self.spaces.append(Space(channels, [source] if source else [],
                                 frozen=[frozen] if frozen else []))
        return len(self.spaces) - 1

    def find(self, i):
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def get(self, i):
        return self.spaces[self.find(i)]

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        sa, sb = self.spaces[a], self.spaces[b]
        for key in ("sources", "followers", "members", "consumers", "frozen"):
            getattr(sa, key).extend(getattr(sb, key))
        self.parent[b] = a
        return a

    def _visit(self, name):
        graph = self.graph
        layer = graph.layer(name)
        ins = [self.out_space[p] for p in graph.producers(name)]
        channels = _channels(layer)
        if isinstance(layer, layers.InputLayer):
            self.out_space[name] = self.new(channels, frozen=f"model input {name}")
        elif len(ins) == 1 and _is_dense_conv(layer):
            self.get(ins[0]).consumers.append(name)
            self.out_space[name] = self.new(channels, source=name)
        elif len(ins) == 1 and _is_channelwise(layer):
            self.get(ins[0]).members.append(name)
            self.out_space[name] = ins[0]
        elif _is_gate(layer) and len(ins) == 2:
            gate = self.get(ins[1])
            gate.followers.extend(gate.primary)
            self.out_space[name] = self.union(ins[0], ins[1])
        elif isinstance(layer, _TIES) and ins:
            root = ins[0]
            for other in ins[1:]:
                root = self.union(root, other)
            self.out_space[name] = root
        else:
            why = f"{type(layer).__name__} {name}"
            for i in ins:
                self.get(i).frozen.append(why)
            self.out_space[name] = self.new(channels, frozen=why)


def _is_gate(layer):
    from mobilekit.layers.activations import GateScale

    return isinstance(layer, GateScale)


def _channels(layer):
    shape = layer.output_shape
    if isinstance(shape, list):
        shape = shape[0]
    return int(shape[-1]) if shape and shape[-1] is not None else 0


def analyze(model):
    """(graph, union-find of channel spaces) of a functional model."""
    graph = Graph(model)
    return graph, _Spaces(graph)


def prunable_groups(model):
    """The channel spaces `channel_prune` may shrink, keyed by their source layer name."""
    graph, spaces = analyze(model)
    return {g.source: g for g in _groups(spaces)}


def _groups(spaces):
    groups, seen = [], set()
    for i in range(len(spaces.spaces)):
        root = spaces.find(i)
        if root in seen:
            continue
        seen.add(root)
        space = spaces.spaces[root]
        if space.frozen or len(space.primary) != 1 or not space.consumers:
            continue
        groups.append(Group(space.primary[0], space.channels, list(space.followers),
                            list(space.members), list(space.consumers)))
    return groups


def importance(model, group, criterion="l1"):
    """Per-channel score of a group (higher = keep); None when the criterion has no data
    (bn_gamma needs a BatchNormalization with a scale right after the source)."""
    check_choice("criterion", criterion, CRITERIA)
    source = model.get_layer(group.source)
    if criterion == "l1":
        kernel = source.get_weights()[0]
        return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
    for node in source.outbound_nodes:
        layer = node.outbound_layer
        if layer.name in group.members and isinstance(layer, layers.BatchNormalization) \
                and layer.scale:
            return np.abs(layer.gamma.numpy())
    return None


def keep_count(channels, ratio, divisor=1):
    """Channels kept when `ratio` of them is removed: at least `divisor` (or all), rounded
    to a multiple of `divisor`."""
    keep = channels - int(math.floor(ratio * channels + 1e-9))
    if divisor > 1:
        keep = int(keep / divisor + 0.5) * divisor  # half up (round() would go to even)
    return max(min(divisor, channels), min(channels, keep), 1)


def select(scores, keep):
    """Indices of the `keep` highest scores, in channel order (ties: lower index kept)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return np.sort(order[:keep])


def pruned_macs(model, groups, keep_counts, layer_macs=None):
    """Exact MACs of the network after keeping keep_counts[source] channels per group.

    Conv/Dense MACs scale with kept inputs x kept outputs, depthwise MACs with kept
    channels; every other layer is unchanged (mobilekit.profile conventions).
    layer_macs: {layer name: MACs} of `model` (computed when not given).
    """
    rows = layer_macs if layer_macs is not None else _layer_macs(model)
    frac_in, frac_out = {}, {}
    for g in groups:
        f = keep_counts[g.source] / g.channels
        for name in [g.source] + g.followers:
            frac_out[name] = f
        for name in g.consumers:
            frac_in[name] = f
        for name in g.members:
            if isinstance(model.get_layer(name), layers.DepthwiseConv2D):
                frac_out[name] = f
    return int(round(sum(m * frac_in.get(n, 1.0) * frac_out.get(n, 1.0)
                         for n, m in rows.items())))


def _layer_macs(model):
    from mobilekit.profile import profile_model

    return {r["name"]: r["macs"] for r in profile_model(model)["layers"]}


def find_ratio(model, groups, target_macs_fraction, divisor=1, max_ratio=0.95):
    """The smallest uniform ratio whose pruned MACs are <= target x the original's."""
    rows = _layer_macs(model)
    total = sum(rows.values())
    goal = target_macs_fraction * total

    def macs(ratio):
        return pruned_macs(model, groups, {g.source: keep_count(g.channels, ratio, divisor)
                                           for g in groups}, rows)

    if macs(max_ratio) > goal:
        floor = macs(max_ratio) / total
        raise ValueError(f"target_macs_fraction {target_macs_fraction} is out of reach: "
                         f"pruning {max_ratio:.0%} of every prunable channel group still "
                         f"leaves {floor:.3f} of the MACs (the rest sits in frozen layers)")
    low, high = 0.0, max_ratio
    for _ in range(30):
        mid = (low + high) / 2
        if macs(mid) <= goal:
            high = mid
        else:
            low = mid
    return high


def channel_prune(model, ratio=None, target_macs_fraction=None, criterion="l1", divisor=1,
                  keep=None):
    """A new, smaller dense functional model with the least important channels removed.

    Give exactly one of: ratio (fraction of channels removed from every prunable group),
    target_macs_fraction (keep at most this fraction of the MACs), or keep
    ({source layer: channel indices to keep}, groups not named stay whole).
    Layer names are kept; weights of the kept channels are copied exactly. Returns
    (new model, plan) where plan maps each pruned group's source to its kept indices.
    """
    check_choice("criterion", criterion, CRITERIA)
    given = [x is not None for x in (ratio, target_macs_fraction, keep)]
    if sum(given) != 1:
        raise ValueError("give exactly one of ratio, target_macs_fraction, keep")
    if not isinstance(divisor, int) or divisor < 1:
        raise ValueError(f"divisor must be a positive integer; got {divisor!r}")
    graph, spaces = analyze(model)
    groups = _groups(spaces)
    if keep is not None:
        plan = _explicit_plan(groups, keep)
    else:
        scored = [(g, importance(model, g, criterion)) for g in groups]
        groups = [g for g, s in scored if s is not None]
        scores = {g.source: s for g, s in scored if s is not None}
        if target_macs_fraction is not None:
            check_range("target_macs_fraction", target_macs_fraction, 0, 1,
                        low_inclusive=False, high_inclusive=True)
            ratio = find_ratio(model, groups, target_macs_fraction, divisor)
        check_range("ratio", ratio, 0, 1, low_inclusive=True, high_inclusive=False)
        plan = {g.source: select(scores[g.source], keep_count(g.channels, ratio, divisor))
                for g in groups}
    return _apply(graph, groups, plan), plan


def _explicit_plan(groups, keep):
    by_source = {g.source: g for g in groups}
    plan = {}
    for source, indices in keep.items():
        if source not in by_source:
            raise ValueError(f"{source!r} is not the source of a prunable channel group; "
                             f"prunable: {', '.join(sorted(by_source)) or 'none'}")
        idx = np.unique(np.asarray(indices, dtype=int))
        channels = by_source[source].channels
        if idx.size == 0 or idx.min() < 0 or idx.max() >= channels:
            raise ValueError(f"keep[{source!r}] must hold 1..{channels} indices in "
                             f"[0, {channels}); got {list(indices)[:10]}")
        plan[source] = idx
    return plan


def _apply(graph, groups, plan):
    """Rebuild the graph with the kept channels and copy the sliced weights."""
    out_keep, in_keep, member_keep = {}, {}, {}
    for g in groups:
        if g.source not in plan or len(plan[g.source]) == g.channels:
            continue
        idx = plan[g.source]
        for name in [g.source] + g.followers:
            out_keep[name] = idx
            cfg = graph.layer_config(name)
            cfg["units" if "units" in cfg else "filters"] = int(len(idx))
        for name in g.consumers:
            in_keep[name] = idx
        for name in g.members:
            member_keep[name] = idx

    def weights_for(layer):
        old = graph.model.get_layer(layer.name).get_weights() \
            if layer.name in graph.entries else None
        if not old:
            return None
        if layer.name in member_keep:
            idx = member_keep[layer.name]
            if isinstance(layer, layers.DepthwiseConv2D):
                return [old[0][:, :, idx, :]] + [w[idx] for w in old[1:]]
            return [w[idx] for w in old]  # BatchNormalization: gamma, beta, mean, variance
        if layer.name in in_keep or layer.name in out_keep:
            kernel = old[0]
            if layer.name in in_keep:
                kernel = np.take(kernel, in_keep[layer.name], axis=kernel.ndim - 2)
            rest = old[1:]
            if layer.name in out_keep:
                kernel = kernel[..., out_keep[layer.name]]
                rest = [w[out_keep[layer.name]] for w in rest]
            return [kernel] + rest
        return None

    return rebuild(graph, weights_for)

