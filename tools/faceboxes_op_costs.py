"""Single-op timings behind FaceBoxes' export forms (docs/faceboxes_shipping.md).

Each case is a tiny Keras model converted alone (int8 with int8 input/output, or fp32) and
all are timed round-robin in one run (1 thread, XNNPACK, one untimed invoke before each
timed one), at FaceBoxes' 640x480 sizes:

- the decoding tail's tensors [1, 6400, 4]: a last-axis SPLIT or CONCATENATION against an
  elementwise op (why integer files decode inside the heads);
- pool1's input [1, 120, 160, 48], non-negative: PAD + MAX_POOL_2D valid against a SAME pool
  + SLICE (`max_pool_padding_swaps`), and PAD alone;
- the stem in its space-to-depth form with 24 and 48 filters (`crelu_stem_swaps`), and the
  plain 7x7/4 conv on 3 channels, each followed by pool1 (fp32 and int8);
- fp32 conv1's C.ReLU as one 48-filter conv (`CReLUConv`, the export's form), as NEG +
  CONCATENATION + RELU, or moved after pool1 (max pool commutes with ReLU, and
  maxpool(relu(-y)) = relu(maxpool(-y)));
- forms tried and not taken: the stem on the image reshaped to 12 channels (width only, a
  free RESHAPE) with a 7x2 / (4, 1) conv; SPACE_TO_DEPTH written as RESHAPE + TRANSPOSE;
  the three Inception modules with each module's three 1x1 convs on the same input as one
  conv + SPLIT.

    python tools/faceboxes_op_costs.py --rounds 200
"""
import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ANCHORS, POOL_IN, IMAGE = 6400, (120, 160, 48), (480, 640, 3)


def _cases():
    """[(name, quant, input shape, non-negative input, build(inputs) -> outputs)]."""
    from mobilekit.keras import layers, tf

    def stem(filters, s2d):
        def build(x):
            if s2d == "width":  # columns in blocks of 4 as channels: a free RESHAPE
                x = tf.reshape(x, (1, IMAGE[0], IMAGE[1] // 4, 4 * IMAGE[2]))
                x = layers.ZeroPadding2D(((3, 0), (1, 0)))(x)
                x = layers.Conv2D(filters, (7, 2), (4, 1), activation="relu")(x)
            elif s2d:  # SPACE_TO_DEPTH(4), block padding, 2x2 conv: the export's int8 stem
                x = tf.nn.space_to_depth(x, 4)
                x = layers.ZeroPadding2D(((1, 0), (1, 0)))(x)
                x = layers.Conv2D(filters, 2, activation="relu")(x)
            else:
                x = layers.ZeroPadding2D(3)(x)
                x = layers.Conv2D(filters, 7, 4, activation="relu")(x)
            return layers.MaxPooling2D(3, 2, padding="same")(x)
        return build

    split = [
        ("SPLIT [1, 6400, 4] -> 2 x [.., 2]", (ANCHORS, 4), False,
         lambda x: tf.split(x, 2, axis=-1)),
        ("CONCATENATION [x, x] of [1, 6400, 2]", (ANCHORS, 2), False,
         lambda x: tf.concat([x, x], axis=-1)),
        ("ADD [1, 6400, 2] + 1 (elementwise, for scale)", (ANCHORS, 2), False,
         lambda x: x + 1.0),
        ("PAD(1) + MAX_POOL_2D 3x3/2 valid", POOL_IN, True,
         lambda x: layers.MaxPooling2D(3, 2)(layers.ZeroPadding2D(1)(x))),
        ("MAX_POOL_2D 3x3/2 SAME on 121x161 + SLICE", (121, 161, 48), True,
         lambda x: tf.slice(tf.nn.max_pool2d(x, 3, 2, "SAME"), [0, 0, 0, 0],
                            [1, 60, 80, 48])),
        ("PAD(1) alone", POOL_IN, True, lambda x: layers.ZeroPadding2D(1)(x)),
        ("SPACE_TO_DEPTH(4) of the image alone", IMAGE, False,
         lambda x: tf.nn.space_to_depth(x, 4)),
        ("the same as RESHAPE + TRANSPOSE + RESHAPE", IMAGE, False, lambda x: tf.reshape(
            tf.transpose(tf.reshape(x, (1, 120, 4, 160, 12)), (0, 1, 3, 2, 4)),
            (1, 120, 160, 48))),
    ]

    def inceptions(merged):
        """Three FaceBoxes Inception modules at 640x480's 20x15 (convs with ReLU; the pool
        branch as the export writes it, a depthwise conv)."""
        def module(x):
            if merged:
                a, c, d = tf.split(layers.Conv2D(80, 1, activation="relu")(x), [32, 24, 24],
                                   axis=-1)
            else:
                a, c, d = (layers.Conv2D(n, 1, activation="relu")(x) for n in (32, 24, 24))
            b = layers.Conv2D(32, 1, activation="relu")(
                layers.DepthwiseConv2D(3, padding="same")(x))
            c = layers.Conv2D(32, 3, padding="same", activation="relu")(c)
            for _ in range(2):
                d = layers.Conv2D(32, 3, padding="same", activation="relu")(d)
            return tf.concat([a, b, c, d], -1)

        def build(x):
            for _ in range(3):
                x = module(x)
            return x
        return build

    def crelu_pool(form):
        """fp32 conv1 + C.ReLU + pool1 as exported (grown padding, SAME pool + SLICE), with
        the C.ReLU as one 48-filter conv, as NEG + CONCATENATION + RELU before the pool, or
        after it: concat(relu(maxpool(y)), relu(maxpool(-y))) on the 4x smaller map."""
        kernel = np.random.default_rng(1).normal(0, 0.1, (7, 7, 3, 24)).astype(np.float32)

        def build(x):
            x = layers.ZeroPadding2D(((3, 4), (3, 4)))(x)
            if form == "one conv":
                y = tf.nn.relu(tf.nn.conv2d(x, np.concatenate([kernel, -kernel], -1), 4,
                                            "VALID"))
                pooled = tf.nn.max_pool2d(y, 3, 2, "SAME")
            else:
                y = tf.nn.conv2d(x, kernel, 4, "VALID")
                if form == "before the pool":
                    pooled = tf.nn.max_pool2d(tf.nn.relu(tf.concat([y, -y], -1)), 3, 2,
                                              "SAME")
                else:
                    pooled = tf.concat([tf.nn.relu(tf.nn.max_pool2d(y, 3, 2, "SAME")),
                                        tf.nn.relu(tf.nn.max_pool2d(-y, 3, 2, "SAME"))], -1)
            return tf.slice(pooled, [0, 0, 0, 0], [1, 60, 80, 48])
        return build

    cases = [(name, "int8", shape, positive, build) for name, shape, positive, build in split]
    for form in ("one conv", "before the pool", "after the pool"):
        cases.append((f"conv1 + C.ReLU ({form}) + pool1", "fp32", IMAGE, False,
                      crelu_pool(form)))
    forms = {False: "7x7/4 conv", True: "SPACE_TO_DEPTH + 2x2 conv",
             "width": "width-only reshape + 7x2/(4,1) conv"}
    for quant in ("int8", "fp32"):
        for filters in (24, 48):
            for s2d, form in forms.items():
                cases.append((f"stem {form}, {filters} filters, + pool1", quant, IMAGE, False,
                              stem(filters, s2d)))
        for merged in (False, True):
            form = "one 1x1 conv + SPLIT" if merged else "three 1x1 convs"
            cases.append((f"inception1-3, {form} per module", quant, (15, 20, 128), True,
                          inceptions(merged)))
    return cases


def _convert(build, quant, shape, positive, rng):
    from mobilekit.keras import keras, tf

    inputs = keras.Input(shape, batch_size=1)
    model = keras.Model(inputs, build(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quant == "int8":
        def samples():
            for _ in range(8):
                x = rng.normal(0, 1, (1, *shape)).astype(np.float32)
                yield [np.abs(x) if positive else x]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = samples
        converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)

    from mobilekit.bench.host import interleaved_times
    from mobilekit.bench.hostinfo import describe

    rng = np.random.default_rng(0)
    cases = _cases()
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, (_, quant, shape, positive, build) in enumerate(cases):
            path = Path(folder, f"case{i}.tflite")
            path.write_bytes(_convert(build, quant, shape, positive, rng))
            paths.append(path)
        times = interleaved_times(paths, rounds=args.rounds, warm_invokes=1)
    print(f"Host: {describe()}; 1 thread, XNNPACK, {args.rounds} round-robin rounds.\n")
    print("| case | quant | min us | median us |\n|---|---|---:|---:|")
    for (name, quant, *_), samples in zip(cases, times):
        print(f"| {name} | {quant} | {min(samples):.1f} | {statistics.median(samples):.1f} |")


if __name__ == "__main__":
    main()
