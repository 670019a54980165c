"""Per-layer int8 error: where in the network does full-integer quantization lose the signal?

The float model and its int8 form run side by side on the same images and every quantized
tensor is compared with its float counterpart. The comparison is TensorFlow's own: the MLIR
quantizer's debug mode (the engine of `tf.lite.experimental.QuantizationDebugger`) emits one
NumericVerify op per quantized op, holding the op's int8 output and the float output beside it.
We build those debug files from mobilekit's calibrated model (our calibration methods and
per-tensor Dense setting, which the stock debugger's converter path would not apply) and use:

- whole-model verification: the float side is the pure float network, so the int8 side's
  difference from it is the error accumulated up to that tensor. What the debugger does not
  compute, and we add: SQNR, relative RMSE, range clipping rate and the dB each op *loses*
  over its worst input, so that the op where the error jumps is named, not the last one;
- layer-wise verification through `QuantizationDebugger` itself: its `rmse/scale` (the op's
  own error, inputs taken from the int8 side, in quantization steps; 0.29 is pure rounding);
- a weights-only / activations-only split: the same network with its weights rounded to the
  int8 grid the converter uses (per output channel for convolutions, per tensor or per unit
  for Dense) run in float gives the weights-only error; its int8 file against it (weights
  already on the grid quantize exactly) gives the activations-only error.

SQNR here is per channel: the noise power of each channel over the variance of its float
values (a constant offset is no signal to an int8 grid that has to hold it), median over
the channels that vary. A whole-tensor SQNR would call a tensor healthy when one outlier
channel holds all the power while the int8 steps it forces flatten every other channel.
"""
import contextlib

import numpy as np

from mobilekit.errors import check_choice

# Ops the quantizer can keep in float (mixed files) are named by their output tensor.
_NV = "NumericVerify"
# A channel whose float values vary less than this fraction of the tensor's most varying
# channel carries no signal (dead ReLU units): left out of the median.
_FLAT_CHANNEL = 1e-12
_MAX_DB = 120.0
# Ops that only move int8 values (same scale in and out): they add no error, though a slice
# of some channels can show another per-channel median than its whole input.
_DATA_MOVES = ("RESHAPE", "STRIDED_SLICE", "SLICE", "SPLIT", "SPLIT_V", "GATHER",
               "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "PACK", "UNPACK")
_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


class LayerTable:
    """Rows of per-layer int8 error, in graph order; `ranked()` worst first.

    Table-like: len(), iteration over row dicts, `table[i]`, `table["column"]` (a list),
    `columns`, `to_dicts()`, `to_markdown()`, and `to_pandas()` where pandas is installed.
    """

    COLUMNS = ("index", "tensor", "layer", "fused", "op", "sqnr_db", "added_db", "rel_rmse",
               "clip_rate", "weights_sqnr_db", "activations_sqnr_db", "dominant", "rmse_steps")

    def __init__(self, rows):
        self.rows = [dict(row) for row in rows]

    columns = property(lambda self: list(self.COLUMNS))

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, key):
        if isinstance(key, str):
            return [row.get(key) for row in self.rows]
        return self.rows[key]

    def ranked(self):
        """Rows by the dB each op loses over its inputs, most first (ties: lower SQNR)."""
        return LayerTable(sorted(self.rows, key=lambda r: (-r["added_db"], r["sqnr_db"])))

    def to_dicts(self):
        return [dict(row) for row in self.rows]

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=self.COLUMNS)

    def to_markdown(self, limit=None):
        headers = ["#", "layer (with what is fused into it)", "op", "SQNR dB", "added dB", "rel. RMSE", "clipped %",
                   "weights-only dB", "activations-only dB", "rmse/step"]
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        for row in self.rows[:limit]:
            shown = row["fused"] if "+" in row["fused"] else row["layer"]
            cells = [row["index"], f"`{shown}`", row["op"], _db(row["sqnr_db"]),
                     _db(row["added_db"]), f"{row['rel_rmse']:.3g}",
                     f"{100 * row['clip_rate']:.2f}", _db(row["weights_sqnr_db"]),
                     _db(row["activations_sqnr_db"]),
                     "-" if row["rmse_steps"] is None else f"{row['rmse_steps']:.2f}"]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        return "\n".join(lines)

    def __repr__(self):
        return f"LayerTable({len(self.rows)} rows)\n{self.to_markdown(limit=10)}"


def _db(value):
    return "-" if value is None else f"{value:.1f}"


def calibrated_model(model, samples, method="average", dense_quant="per-tensor"):
    """(float TFLite bytes with each tensor's calibrated range, the converted Keras clone).

    The clone is mobilekit's int8 form of `model` (mobilekit.export.delegable); ranges come
    from mobilekit's calibration `method` exactly as `convert(..., quant="int8")` sets them.
    """
    from mobilekit.export.delegable import delegable_clone

    return _calibrated(delegable_clone(model), samples, method, dense_quant)


def _input_sqnr(calibrated, images):
    """SQNR of the model input rounded to its calibrated int8 range."""
    from tensorflow.lite.python import schema_py_generated as schema

    from mobilekit.export.calibration import tensor_ranges

    graph = schema.Model.GetRootAsModel(calibrated, 0).Subgraphs(0)
    low, high = (float(v[0]) for v in tensor_ranges(calibrated)[int(graph.Inputs(0))])
    scale = (max(high, 0.0) - min(low, 0.0)) / 255 or 1.0
    zero = np.round(-128 - min(low, 0.0) / scale)
    moments = _Moments()
    for image in images:
        q = (np.clip(np.round(image / scale + zero), -128, 127) - zero) * scale
        moments.add(image.astype(np.float64), q)
    return moments.sqnr_db()


def _calibrated(source, samples, method, dense_quant):
    """calibrated_model of a network already in its int8 form."""
    from mobilekit.export.calibration import calibration_hook
    from mobilekit.export.convert import _converter, calibration_samples, input_spec
    from mobilekit.keras import tf

    samples = calibration_samples(samples)
    concrete = tf.function(lambda x: source(x, training=False)).get_concrete_function(
        input_spec(source))
    with calibration_hook(method):
        converter = _converter(concrete, "int8", samples, "float", False, False,
                               dense_quant=dense_quant)
        converter._experimental_calibrate_only = True  # noqa: SLF001 (the debugger's switch)
        return bytes(converter.convert()), source


def quantize_calibrated(calibrated, dense_quant="per-tensor", denylisted_nodes=None,
                        verify=None):
    """The MLIR quantizer on a calibrated model: float I/O; ops whose output tensor is in
    `denylisted_nodes` stay float (a mixed file); verify "layer" / "whole" adds the
    debug NumericVerify ops (layer-wise or whole-model)."""
    from tensorflow.lite.python import convert as tf_convert

    return bytes(tf_convert.mlir_quantize(
        calibrated, fully_quantize=False, enable_numeric_verify=verify is not None,
        enable_whole_model_verify=verify == "whole",
        denylisted_nodes=list(denylisted_nodes or []) or None,
        disable_per_channel_for_dense_layers=dense_quant == "per-tensor"))


def _interpreter(model_bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # No XNNPACK: tensors inside a delegated partition are never written back.
    interp = Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=(
                             OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interp.allocate_tensors()
    return interp


def _verify_pairs(interp):
    """[(quantized tensor detail, float tensor detail, op name)] of every NumericVerify,
    in graph order; op name is the type of the op producing the quantized tensor."""
    ops = interp._get_ops_details()  # noqa: SLF001 (as QuantizationDebugger reads them)
    producer = {t: op["op_name"] for op in ops for t in op["outputs"]}
    pairs = []
    for op in ops:
        if op["op_name"] == _NV:
            q_index, f_index = op["inputs"][:2]
            pairs.append((interp._get_tensor_details(q_index, 0),  # noqa: SLF001
                          interp._get_tensor_details(f_index, 0),  # noqa: SLF001
                          producer.get(q_index, "?")))
    return pairs


def _dequantize(values, detail):
    params = detail["quantization_parameters"]
    if not np.issubdtype(values.dtype, np.integer) or not len(params["scales"]):
        return values.astype(np.float64)
    return (values.astype(np.float64) - params["zero_points"][0]) * params["scales"][0]


def _int_range(detail):
    params = detail["quantization_parameters"]
    info = np.iinfo(detail["dtype"])
    scale, zero = params["scales"][0], params["zero_points"][0]
    half = scale / 2  # values within half a step of the ends round to them: not clipped
    return (info.min - zero) * scale - half, (info.max - zero) * scale + half


class _Moments:
    """Per-channel running sums of a float tensor and of another tensor's error against it."""

    def __init__(self):
        self.n = 0
        self.s1 = self.s2 = self.noise = 0.0
        self.clipped = 0
        self.values = 0

    def add(self, ref, other, limits=None):
        ref = ref.reshape(-1, ref.shape[-1]) if ref.ndim > 1 else ref.reshape(-1, 1)
        other = other.reshape(ref.shape)
        self.n += len(ref)
        self.s1 = self.s1 + ref.sum(0)
        self.s2 = self.s2 + (ref ** 2).sum(0)
        self.noise = self.noise + ((other - ref) ** 2).sum(0)
        if limits is not None:
            self.clipped += int(((ref < limits[0]) | (ref > limits[1])).sum())
        self.values += ref.size

    def sqnr_db(self):
        """Median over varying channels of 10 log10(var(float) / mean squared error)."""
        mean = self.s1 / self.n
        var = np.maximum(self.s2 / self.n - mean ** 2, 0)
        noise = self.noise / self.n
        live = var > _FLAT_CHANNEL * max(float(var.max()), 1e-30)
        if not live.any():
            return _MAX_DB
        ratio = float(np.median(noise[live] / var[live]))
        return _MAX_DB if ratio <= 0 else min(_MAX_DB, -10 * np.log10(ratio))

    def rel_rmse(self):
        power = float(np.sum(self.s2))
        return float(np.sqrt(np.sum(self.noise) / power)) if power > 0 else 0.0


def _whole_model_moments(debug_bytes, images, reference=None):
    """{float tensor name: (quant-vs-float moments, op, limits, index, float-vs-reference
    moments)} from a whole-model debug file; `reference` maps float tensor names to their
    values per image from another network (for the weights-only comparison)."""
    interp = _interpreter(debug_bytes)
    pairs = _verify_pairs(interp)
    inp = interp.get_input_details()[0]
    stats = {f["name"]: [_Moments(), op, _int_range(q), position, _Moments()]
             for position, (q, f, op) in enumerate(pairs)}
    floats = {}
    for image_index, image in enumerate(images):
        interp.set_tensor(inp["index"], np.asarray(image[None], np.float32))
        interp.invoke()
        for q, f, _ in pairs:
            ref = interp.get_tensor(f["index"]).astype(np.float64)
            entry = stats[f["name"]]
            entry[0].add(ref, _dequantize(interp.get_tensor(q["index"]), q), entry[2])
            if reference is not None and f["name"] in reference:
                entry[4].add(reference[f["name"]][image_index], ref)
            floats.setdefault(f["name"], []).append(ref)
    return stats, floats, pairs


def graph_links(model_bytes):
    """({op output name: [its activation input names]}, {tensor name: [op output names
    consuming it]}, {op output name: [its constant input names (weights, biases)]}) of the
    first subgraph of a float or calibrated TFLite model."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph = schema.Model.GetRootAsModel(model_bytes, 0).Subgraphs(0)
    names = [graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength())]
    ops = []
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        ops.append(([int(i) for i in op.InputsAsNumpy() if i >= 0],
                    [int(i) for i in op.OutputsAsNumpy()]))
    activations = {o for _, outs in ops for o in outs}
    activations |= {int(graph.Inputs(i)) for i in range(graph.InputsLength())}
    inputs_of, consumers, constants = {}, {}, {}
    for ins, outs in ops:
        live = [names[i] for i in ins if i in activations]
        for o in outs:
            inputs_of[names[o]] = live
            constants[names[o]] = [names[i] for i in ins if i not in activations]
            for name in live:
                consumers.setdefault(name, []).append(names[o])
    return inputs_of, consumers, constants


def _layer_names(tensor, weight_names, layer_names):
    """The Keras layers a TFLite tensor comes from: the path segments of its (fused) name
    and of its op's weights that name a layer, in model order, joined by '+' (a conv with
    its folded BatchNorm and activation: "block1_pw+block1_pw_bn+block1_pw_act")."""
    found = set()
    for text in [tensor] + list(weight_names):
        for part in text.split(";"):
            found.update(seg for seg in part.split("/") if seg in layer_names)
    ordered = [name for name in layer_names if name in found]
    return "+".join(ordered) if ordered else tensor


def _short_name(fused, tensor, op):
    """The op's own layer: the conv, not its folded BN; for an op inside a layer (the box
    decoding's EXP, a pooling's MEAN) the layer and the op's name there ("decode/Exp")."""
    first = fused.split("+")[0]
    if op in _WEIGHT_OPS or first == tensor:
        return first
    if tensor.startswith("Identity"):  # a model output: the converter's name, not a layer's
        return f"{first}:{tensor}"
    parts = tensor.split(";")[0].split("/")
    if first in parts and parts.index(first) + 1 < len(parts):
        return f"{first}/{parts[parts.index(first) + 1]}"
    return first


@contextlib.contextmanager
def rounded_weights(model, dense_quant="per-tensor"):
    """While active, `model`'s Conv2D / DepthwiseConv2D / Dense kernels sit on the int8 grid
    the converter rounds them to (per output channel; Dense per tensor or per unit)."""
    from mobilekit.export.bias_correction import _rounding_error

    saved = []
    try:
        for layer in model.layers:
            kind = type(layer).__name__
            if kind not in ("Conv2D", "DepthwiseConv2D", "Dense"):
                continue
            weights = layer.get_weights()
            kernel = weights[0]
            if kind == "DepthwiseConv2D":
                channels = kernel.shape[-2] * kernel.shape[-1]
            elif kind == "Dense" and dense_quant == "per-tensor":
                channels = 1
            else:
                channels = kernel.shape[-1]
            saved.append((layer, [w.copy() for w in weights]))
            weights[0] = kernel + _rounding_error(kernel, channels).astype(kernel.dtype)
            layer.set_weights(weights)
        yield model
    finally:
        for layer, weights in reversed(saved):
            layer.set_weights(weights)


def layer_errors(model, calib_images, images, method="average", dense_quant="per-tensor",
                 split=True, debugger_images=8):
    """LayerTable of every quantized tensor of `model`'s int8 form (see module docstring).

    calib_images: calibration images (preprocessed like the model's inputs); images: the
    images compared on (a few dozen suffice). split: also run the weights-only /
    activations-only comparison. debugger_images: images for QuantizationDebugger's
    layer-wise `rmse/scale` (0: skip it).
    Returns (table, calibrated model bytes) - the second for mixed files
    (`quantize_calibrated(..., denylisted_nodes=...)`).
    """
    check_choice("dense_quant", dense_quant, ("per-tensor", "per-channel"))
    images = np.asarray(images, np.float32)
    calibrated, source = calibrated_model(model, calib_images, method, dense_quant)
    whole = quantize_calibrated(calibrated, dense_quant, verify="whole")
    stats, floats, pairs = _whole_model_moments(whole, images)
    split_stats = None
    if split:
        with rounded_weights(source, dense_quant):
            rounded_cal, _ = _calibrated(source, calib_images, method, dense_quant)
        rounded = quantize_calibrated(rounded_cal, dense_quant, verify="whole")
        split_stats, _, _ = _whole_model_moments(rounded, images, reference=floats)
    local = _debugger_rmse(calibrated, dense_quant, images[:debugger_images]) \
        if debugger_images else {}
    inputs_of, _, weights = graph_links(calibrated)
    layer_names = [layer.name for layer in source.layers]
    sqnr = {name: entry[0].sqnr_db() for name, entry in stats.items()}
    input_db = _input_sqnr(calibrated, images)
    rows = []
    for name, (moments, op, _, position, _) in sorted(stats.items(), key=lambda kv: kv[1][3]):
        before = [sqnr[i] for i in inputs_of.get(name, []) if i in sqnr]
        # An op on the model input starts from the input's own int8 rounding.
        base = min(before) if before else input_db
        if op in _DATA_MOVES:  # same scale in and out: a slice cannot add error
            base = sqnr[name]
        row = {"index": position, "tensor": name,
               "fused": _layer_names(name, weights.get(name, []), layer_names), "op": op,
               "sqnr_db": round(sqnr[name], 2),
               "added_db": round(max(0.0, base - sqnr[name]), 2),
               "rel_rmse": moments.rel_rmse(),
               "clip_rate": moments.clipped / max(moments.values, 1),
               "weights_sqnr_db": None, "activations_sqnr_db": None, "dominant": None,
               "rmse_steps": local.get(name)}
        if split_stats and name in split_stats:
            activations, weights_only = split_stats[name][0], split_stats[name][4]
            row["weights_sqnr_db"] = round(weights_only.sqnr_db(), 2)
            row["activations_sqnr_db"] = round(activations.sqnr_db(), 2)
            row["dominant"] = ("weights" if row["weights_sqnr_db"] < row["activations_sqnr_db"]
                               else "activations")
        row["layer"] = _short_name(row["fused"], name, op)
        rows.append(row)
    if not rows:
        raise ValueError(f"{model.name} has no quantized tensor: nothing for int8 to hurt")
    return LayerTable(rows), calibrated


def _debugger_rmse(calibrated, dense_quant, images):
    """{float tensor name: rmse / scale} from tf.lite.experimental.QuantizationDebugger on a
    layer-wise debug file (each op fed the int8 side's inputs: the op's own error)."""
    from mobilekit.keras import tf

    debug = quantize_calibrated(calibrated, dense_quant, verify="layer")
    options = tf.lite.experimental.QuantizationDebugOptions(layer_debug_metrics={})
    debugger = tf.lite.experimental.QuantizationDebugger(quant_debug_model_content=debug,
                                    debug_dataset=lambda: ([img[None]] for img in images),
                                    debug_options=options)
    debugger.run()
    interp = _interpreter(debug)
    names = {q["name"]: f["name"] for q, f, _ in _verify_pairs(interp)}
    result = {}
    for key, metrics in debugger.layer_statistics.items():
        # Keys read "NumericVerify/<quantized tensor>:<index>".
        quant_name = key[len(_NV) + 1:].rsplit(":", 1)[0]
        scale = _scale_of(interp, quant_name)
        if quant_name in names and scale:
            result[names[quant_name]] = float(np.sqrt(metrics["mean_squared_error"]) / scale)
    return result


def _scale_of(interp, name):
    for detail in interp.get_tensor_details():
        if detail["name"] == name and len(detail["quantization_parameters"]["scales"]):
            return float(detail["quantization_parameters"]["scales"][0])
    return None
