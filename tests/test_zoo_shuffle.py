"""ChannelShuffle, group convolution, ShuffleNet v1/v2 and SqueezeNet structure."""
import numpy as np
import pytest

from mobilekit.keras import keras, layers, tf
from mobilekit.layers.group_conv import (group_conv, split_weights_from_native,
                                        train_grouped_convs_without_xla)
from mobilekit.layers.shuffle import ChannelShuffle, ChannelSplit
from mobilekit.profile import profile_model
from mobilekit.zoo.registry import create_model
from mobilekit.zoo.squeezenet import ceil_max_pool


def shuffle_5d(x, groups):
    """The classic definition: [N,H,W,g,C/g] -> swap the last two axes -> [N,H,W,C]."""
    n, h, w, c = x.shape
    return x.reshape(n, h, w, groups, c // groups).transpose(0, 1, 2, 4, 3).reshape(n, h, w, c)


@pytest.mark.parametrize("groups,shape", [(2, (2, 3, 5, 8)), (3, (1, 4, 4, 12)),
                                          (4, (1, 1, 7, 16)), (8, (3, 2, 2, 24))])
def test_shuffle_equals_5d_reference(groups, shape):
    x = np.random.default_rng(groups).standard_normal(shape).astype(np.float32)
    ours = ChannelShuffle(groups)(tf.constant(x)).numpy()
    assert np.array_equal(ours, shuffle_5d(x, groups))
    assert not np.array_equal(ours, x)  # it really moved channels


def test_shuffle_moves_channel_i_j_to_j_g_plus_i():
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 1, 6)  # groups of 3: [0 1 2][3 4 5]
    assert ChannelShuffle(2)(tf.constant(x)).numpy().ravel().tolist() == [0, 3, 1, 4, 2, 5]


def test_shuffle_rejects_bad_groups():
    with pytest.raises(ValueError, match="positive integer; got 0"):
        ChannelShuffle(0)
    with pytest.raises(ValueError, match=r"channels \(10\).*groups \(3\)"):
        ChannelShuffle(3)(layers.Input((4, 4, 10)))


def test_tflite_shuffle_stays_4d():
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    inp = layers.Input((6, 6, 12), batch_size=1)
    x = layers.Conv2D(12, 1, name="conv")(inp)
    out = ChannelShuffle(3, name="shuffle")(x)
    model = keras.Model(inp, out)
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    it = Interpreter(model_content=content,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    ops = [op["op_name"] for op in it._get_ops_details()]
    assert "TRANSPOSE" in ops and ops.count("RESHAPE") == 2
    assert max(len(t["shape"]) for t in it.get_tensor_details()) == 4
    x = np.random.default_rng(0).standard_normal((1, 6, 6, 12)).astype(np.float32)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    got = it.get_tensor(it.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-5)


def _group_model(impl, groups=4):
    inp = layers.Input((9, 9, 8))
    out = group_conv(inp, 12, 3, groups, strides=2, name="g", impl=impl, use_bias=True)
    return keras.Model(inp, out)


def test_group_conv_native_equals_split():
    native, split = _group_model("native"), _group_model("split")
    kernel, bias = native.get_layer("g").get_weights()
    for i, w in enumerate(split_weights_from_native(kernel, 4, bias)):
        split.get_layer(f"g_g{i}").set_weights(w)
    x = np.random.default_rng(1).standard_normal((2, 9, 9, 8)).astype(np.float32)
    np.testing.assert_allclose(native(x).numpy(), split(x).numpy(), rtol=1e-5, atol=1e-5)
    pn, ps = profile_model(native), profile_model(split)
    assert pn["macs"] == ps["macs"] == 5 * 5 * 12 * 3 * 3 * 8 // 4
    assert pn["trainable_params"] == ps["trainable_params"] == 3 * 3 * 2 * 12 + 12
    assert isinstance(split.get_layer("g_split"), ChannelSplit)


def test_training_without_xla_gives_the_same_outputs_and_gradients(tmp_path):
    x = tf.constant(np.random.default_rng(2).standard_normal((2, 9, 9, 8)).astype(np.float32))
    xla, plain = _group_model("native"), _group_model("native")
    plain.set_weights(xla.get_weights())
    assert train_grouped_convs_without_xla(plain) == 1
    assert train_grouped_convs_without_xla(keras.Sequential([layers.Dense(2)])) == 0

    def value_and_grads(model):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(model(x, training=True) ** 2)
        return [loss] + tape.gradient(loss, [x] + model.trainable_variables)

    for a, b in zip(value_and_grads(xla), value_and_grads(plain)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)
    # The switch is not saved: a reloaded model is a plain grouped Conv2D again.
    plain.save(tmp_path / "m.keras")
    layer = keras.models.load_model(tmp_path / "m.keras").get_layer("g")
    assert "_jit_compiled_convolution_op" not in vars(layer)
    assert "_jit_compiled_convolution_op" in vars(plain.get_layer("g"))


def test_group_conv_rejects_bad_arguments():
    inp = layers.Input((4, 4, 8))
    with pytest.raises(ValueError, match="native, split; got 'lambda'"):
        group_conv(inp, 8, 1, 2, impl="lambda")
    with pytest.raises(ValueError, match=r"\(8\) and filters \(6\).*groups \(4\)"):
        group_conv(inp, 6, 1, 4)


def test_shufflenet_v1_first_unit_not_grouped():
    model = create_model("shufflenet_v1", groups=3, alpha=0.5, resolution=32, num_classes=5,
                         group_conv_impl="native")
    first = model.get_layer("stage2_unit1_gconv1")
    assert first.groups == 1 and first.kernel.shape == (1, 1, 12, 30)
    assert model.get_layer("stage2_unit1_gconv2").groups == 3
    assert model.get_layer("stage2_unit2_gconv1").groups == 3
    assert model.get_layer("stage3_unit1_gconv1").groups == 3
    # stride-2 unit: avg-pool shortcut (12) + main branch (120 - 12) = 120 channels
    assert model.get_layer("stage2_unit1_concat").output.shape[-1] == 120
    assert model.get_layer("stage2_unit1_gconv2").output.shape[-1] == 108
    assert model.output.shape[-1] == 5


def test_gpu_safe_groups_rule():
    from mobilekit.layers.group_conv import gpu_safe_groups

    # 0.5x stage 2: 30 -> 108 in 3 groups (10 / 36 per group) kills the GPU delegate.
    assert not gpu_safe_groups(30, 108, 3) and not gpu_safe_groups(24, 18, 3)
    assert gpu_safe_groups(240, 60, 3) and gpu_safe_groups(12, 12, 3) and gpu_safe_groups(7, 5, 1)


def test_bad_groups_and_alpha_name_accepted_values():
    with pytest.raises(ValueError, match=r"shufflenet_v1 must be one of 1, 2, 3, 4, 8; got 5"):
        create_model("shufflenet_v1", groups=5, resolution=32)
    with pytest.raises(ValueError, match=r"0.25, 0.5, 1.0, 1.5, 2.0; got 0.75"):
        create_model("shufflenet_v1", alpha=0.75, resolution=32)
    with pytest.raises(ValueError, match=r"0.5, 1.0, 1.5, 2.0; got 0.25"):
        create_model("shufflenet_v2", alpha=0.25, resolution=32)
    with pytest.raises(ValueError, match=r"must be one of 1.0; got 0.5"):
        create_model("squeezenet_1_1", alpha=0.5, resolution=32)


def _conv1_and_pools(model):
    conv1 = model.get_layer("conv1")
    pools = [l.name for l in model.layers if isinstance(l, layers.MaxPooling2D)]
    return conv1.kernel_size, conv1.filters, pools


def test_squeezenet_1_0_vs_1_1():
    v10 = create_model("squeezenet_1_0", resolution=224, num_classes=4)
    v11 = create_model("squeezenet_1_1", resolution=224, num_classes=4)
    assert _conv1_and_pools(v10) == ((7, 7), 96, ["pool1", "pool4", "pool8"])
    assert _conv1_and_pools(v11) == ((3, 3), 64, ["pool1", "pool3", "pool5"])
    # torchvision (ceil_mode=True) feature sizes at 224: 1.0 109-54-27-13, 1.1 111-55-27-13
    sizes = lambda m, names: [m.get_layer(n).output.shape[1] for n in names]  # noqa: E731
    assert sizes(v10, ["conv1", "pool1", "pool4", "pool8"]) == [109, 54, 27, 13]
    assert sizes(v11, ["conv1", "pool1", "pool3", "pool5"]) == [111, 55, 27, 13]
    # Fire modules are identical; only conv1 differs in weights: 3*3*3*64+64 vs 7*7*3*96+96
    p10, p11 = profile_model(v10), profile_model(v11)
    assert p10["trainable_params"] - p11["trainable_params"] == (7 * 7 * 3 * 96 + 96) - (
        3 * 3 * 3 * 64 + 64) + (96 - 64) * 16  # fire2's squeeze sees 96 vs 64 channels
    assert not any(isinstance(l, layers.BatchNormalization) for l in v10.layers)
    assert p10["macs"] > 2.3 * p11["macs"]


@pytest.mark.parametrize("name", ["squeezenet_1_0", "squeezenet_1_1"])
def test_squeezenet_signal_reaches_the_head_at_init(name):
    # No BatchNorm: with Glorot weights the last Fire output was ~1e-4 of conv1's and
    # training never left chance. He init keeps it at the same order as conv1's output.
    tf.keras.utils.set_random_seed(0)
    model = create_model(name, resolution=64, num_classes=10)
    x = np.random.default_rng(0).normal(0, 1, (8, 64, 64, 3)).astype(np.float32)
    probe = keras.Model(model.input, [model.get_layer("conv1_act").output,
                                      model.get_layer("fire9_concat").output])
    first, last = (np.asarray(t).std() for t in probe(x))
    assert 0.1 < last / first < 10


@pytest.mark.parametrize("size", [(9, 9), (10, 10), (10, 9), (7, 12)])
def test_ceil_max_pool_matches_ceil_mode(size):
    h, w = size
    x = np.random.default_rng(h * w).uniform(0, 1, (1, h, w, 2)).astype(np.float32)
    inp = layers.Input((h, w, 2))
    got = keras.Model(inp, ceil_max_pool(inp, "pool"))(x).numpy()
    oh, ow = -(-(h - 3) // 2) + 1, -(-(w - 3) // 2) + 1
    want = np.zeros((1, oh, ow, 2), np.float32)
    for i in range(oh):
        for j in range(ow):
            want[0, i, j] = x[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(0, 1))
    assert np.array_equal(got, want)


def test_keras_round_trip_restores_custom_layers(tmp_path):
    # the split impl puts both custom layers (ChannelSplit, ChannelShuffle) in one model
    model = create_model("shufflenet_v1", groups=2, alpha=0.25, group_conv_impl="split",
                         resolution=32, num_classes=3)
    path = tmp_path / "shufflenet_v1.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(2).standard_normal((1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    assert isinstance(loaded.get_layer("stage3_unit2_shuffle"), ChannelShuffle)
    assert loaded.get_layer("stage3_unit2_shuffle").groups == 2
    assert isinstance(loaded.get_layer("stage3_unit2_gconv1_split"), ChannelSplit)


def test_shufflenet_v1_widths_match_megvii_tables():
    from mobilekit.zoo.shufflenet import shufflenet_v1_widths

    megvii = {(3, 0.5): (12, (120, 240, 480)), (3, 1.0): (24, (240, 480, 960)),
              (3, 1.5): (24, (360, 720, 1440)), (3, 2.0): (48, (480, 960, 1920)),
              (8, 0.5): (16, (192, 384, 768)), (8, 1.0): (24, (384, 768, 1536)),
              (8, 1.5): (24, (576, 1152, 2304)), (8, 2.0): (48, (768, 1536, 3072))}
    for (g, alpha), widths in megvii.items():
        assert shufflenet_v1_widths(g, alpha) == widths
    # a width that is not a multiple of 4g is rounded so the bottleneck still splits into g
    assert shufflenet_v1_widths(4, 0.25) == (8, (64, 144, 272))
