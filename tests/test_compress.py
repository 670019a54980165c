"""Magnitude pruning, structured channel pruning and SVD factorisation (mobilekit.compress)."""
import gzip
import json

import numpy as np
import pytest

import mobilekit  # noqa: F401  (sets TF_USE_LEGACY_KERAS)
from mobilekit.compress import channel_prune as cp
from mobilekit.compress import lowrank, pruning
from mobilekit.keras import keras, layers
from mobilekit.profile import profile_model
from mobilekit.zoo.registry import create_model

RES = 32


def _randomize_bn(model, seed=0):
    """Non-trivial BN statistics so that outputs depend on every channel."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.2, b.shape),
                               rng.normal(0, 0.2, m.shape), rng.uniform(0.5, 1.5, v.shape)])
    return model


def _model(name, alpha, res=RES, **kwargs):
    keras.utils.set_random_seed(0)
    return _randomize_bn(create_model(name, resolution=res, num_classes=10, alpha=alpha,
                                      **kwargs))


def _images(n=2, res=RES, seed=1):
    return np.random.default_rng(seed).normal(size=(n, res, res, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def mnv2():
    return _model("mobilenet_v2", 0.35)


@pytest.fixture(scope="module")
def mnv1():
    return _model("mobilenet_v1", 0.25)


# ---------------------------------------------------------------- magnitude pruning


def _fit_pruned(pruned, steps):
    x = _images(4)
    y = np.arange(4) % 10
    pruned.compile(optimizer=keras.optimizers.SGD(1e-3), run_eagerly=True,  # no tracing
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=1, epochs=1, steps_per_epoch=steps, verbose=0,
               callbacks=pruning.pruning_callbacks())


def test_prune_reaches_target_and_leaves_original_dense():
    model = _model("mobilenet_v1", 0.25)
    before = [w.copy() for w in model.get_weights()]
    pruned = pruning.prune_model(model, 0.75, "polynomial", begin_step=0, end_step=3,
                                 frequency=1)
    _fit_pruned(pruned, steps=4)
    final = pruning.strip(pruned)
    assert not pruning.is_pruning_wrapped(final)
    rows = {r["name"]: r for r in pruning.sparsity_report(final)["layers"]}
    # every pointwise / dense kernel reaches the target; depthwise kernels are never pruned
    assert rows["block3_pw"]["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert rows["head_logits"]["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert rows["block3_dw"]["sparsity"] == 0.0
    # prune_low_magnitude shares layers: prune_model cloned first, the original is intact
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert pruning.sparsity_report(model)["zeros"] == 0


@pytest.mark.slow  # ~20 s; the pruning target test stays fast
def test_default_frequency_prunes_nothing_in_a_short_run():
    # tfmot's default frequency (100): the polynomial schedule's only update in the first
    # 100 steps is at begin_step, where the sparsity is still the initial 0
    pruned = pruning.prune_model(_model("mobilenet_v1", 0.25), 0.5, "polynomial", begin_step=0,
                                 end_step=1000, frequency=100)
    _fit_pruned(pruned, steps=3)
    assert pruning.sparsity_report(pruning.strip(pruned))["zeros"] == 0


def test_pruned_tflite_gzips_smaller_but_is_not_smaller_raw():
    from mobilekit.export.convert import convert

    model = _model("mobilenet_v1", 0.25)
    pruned = pruning.prune_model(model, 0.8, "constant", frequency=1)
    _fit_pruned(pruned, steps=1)
    dense, sparse = convert(model, "fp32"), convert(pruning.strip(pruned), "fp32")
    assert len(sparse) >= 0.95 * len(dense)
    assert pruning.gzip_size(sparse) < 0.6 * pruning.gzip_size(dense)
    assert pruning.gzip_size(dense) == len(gzip.compress(dense, 9, mtime=0))


def test_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match="schedule must be one of polynomial, constant"):
        pruning.make_schedule("cubic", 0.5, end_step=10)
    with pytest.raises(ValueError, match="end_step"):
        pruning.make_schedule("polynomial", 0.5, end_step=None)
    with pytest.raises(ValueError, match="target_sparsity must be in"):
        pruning.make_schedule("constant", 1.5)
    with pytest.raises(ValueError, match="frequency must be a positive integer"):
        pruning.make_schedule("constant", 0.5, frequency=0)


def test_xnnpack_layout_satisfies_the_tfmot_policy(mnv1):
    with pytest.raises(ValueError, match="Could not find `Conv2D 3x3`"):
        pruning.prune_model(mnv1, 0.8, "constant", xnnpack_policy=True)
    laid = pruning.xnnpack_sparse_layout(mnv1)
    pads = [layer for layer in laid.layers if isinstance(layer, layers.ZeroPadding2D)]
    strided = [layer for layer in mnv1.layers if getattr(layer, "strides", (1, 1)) == (2, 2)]
    assert len(pads) == len(strided) == 5  # the stem and 4 depthwise convs
    assert laid.get_layer("stem").padding == "valid"
    assert laid.output_shape == mnv1.output_shape
    np.testing.assert_array_equal(laid.get_layer("block2_dw").get_weights()[0],
                                  mnv1.get_layer("block2_dw").get_weights()[0])
    pruned = pruning.prune_model(laid, 0.8, "constant", frequency=1, xnnpack_policy=True)
    wrapped = {layer.layer.name for layer in pruned.layers
               if isinstance(layer, pruning.PruneLowMagnitude)}
    # the policy prunes 1x1 convs only: not the stem, the depthwise convs or the classifier
    assert wrapped == {f"block{i}_pw" for i in range(1, 14)}


# ---------------------------------------------------------------- channel pruning


def test_channel_groups_respect_residual_adds(mnv2):
    groups = cp.prunable_groups(mnv2)
    # expanded (internal) channels of inverted residuals and the last 1x1 are prunable ...
    assert {"block1_expand", "block2_expand", "last_conv", "stem"} <= set(groups)
    # ... channels tied across an Add (block1/2 projections share block2_add) are not
    assert "block1_project" not in groups and "block2_project" not in groups
    # block 0's projection feeds no Add (block 1 downsamples): it may be pruned
    assert "block0_project" in groups
    g = groups["block1_expand"]
    assert g.members == ["block1_expand_bn", "block1_expand_act", "block1_dw", "block1_dw_bn",
                         "block1_dw_act"]
    assert g.consumers == ["block1_project"]


@pytest.mark.parametrize("fixture", ["mnv1", "mnv2"])
def test_pruning_no_channel_is_identity(fixture, request):
    model = request.getfixturevalue(fixture)
    pruned, plan = cp.channel_prune(model, ratio=0.0)
    assert all(len(idx) == cp.prunable_groups(model)[src].channels for src, idx in plan.items())
    x = _images()
    np.testing.assert_array_equal(pruned(x, training=False).numpy(),
                                  model(x, training=False).numpy())


def _zero_every_third(model):
    """Zero every third channel of each group (source filter and consumer inputs)."""
    keep = {}
    for group in cp.prunable_groups(model).values():
        drop = np.arange(0, group.channels, 3)
        keep[group.source] = np.setdiff1d(np.arange(group.channels), drop)
        src = model.get_layer(group.source)
        weights = src.get_weights()
        weights[0][..., drop] = 0
        src.set_weights(weights)
        for name in group.consumers:
            layer = model.get_layer(name)
            weights = layer.get_weights()
            np.moveaxis(weights[0], -2, 0)[drop] = 0
            layer.set_weights(weights)
    return keep


@pytest.mark.parametrize("name,alpha", [("mobilenet_v2", 0.35),
                                        pytest.param("mobilenet_v3_small", 0.75,
                                                     marks=pytest.mark.slow)])
def test_pruning_zeroed_channels_is_exact(name, alpha):
    model = _model(name, alpha)
    keep = _zero_every_third(model)
    x = _images()
    expected = model(x, training=False).numpy()
    pruned, plan = cp.channel_prune(model, keep=keep)
    np.testing.assert_allclose(pruned(x, training=False).numpy(), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())
    assert np.abs(expected).max() > 1e-2  # the check compares real signal
    # same layer names; the SE convs (v3) follow their block's expanded channels
    assert [layer.name for layer in pruned.layers] == [layer.name for layer in model.layers]
    groups = cp.prunable_groups(model)
    for source, idx in plan.items():
        assert pruned.get_layer(source).get_weights()[0].shape[-1] == len(idx)
        for follower in groups[source].followers:
            assert pruned.get_layer(follower).get_weights()[0].shape[-1] == len(idx)
    if name == "mobilenet_v3_small":
        assert groups["block3_expand"].followers == ["block3_se_expand"]
        assert "block3_se_reduce" in groups["block3_expand"].consumers
    # the L1 criterion ranks exactly the zeroed filters lowest
    for source, idx in plan.items():
        scores = cp.importance(model, groups[source], "l1")
        assert set(cp.select(scores, len(idx))) == set(idx)


def test_macs_target_is_met_and_measured(mnv2):
    pruned, plan = cp.channel_prune(mnv2, target_macs_fraction=0.7)
    before, after = profile_model(mnv2)["macs"], profile_model(pruned)["macs"]
    assert 0.65 * before <= after <= 0.7 * before
    groups = cp.prunable_groups(mnv2)
    counts = {src: len(idx) for src, idx in plan.items()}
    assert cp.pruned_macs(mnv2, list(groups.values()), counts) == after
    assert pruned.count_params() < mnv2.count_params()


def test_bn_gamma_criterion_keeps_largest_gammas(mnv2):
    pruned, plan = cp.channel_prune(mnv2, ratio=0.5, criterion="bn_gamma")
    gamma = np.abs(mnv2.get_layer("block2_expand_bn").gamma.numpy())
    kept = plan["block2_expand"]
    assert len(kept) == len(gamma) - len(gamma) // 2
    assert gamma[kept].min() >= np.delete(gamma, kept).max()


def test_keep_count_rounding():
    assert cp.keep_count(96, 0.3) == 68             # floor(28.8) = 28 removed
    assert cp.keep_count(96, 0.3, divisor=8) == 72  # 68 / 8 = 8.5 rounds half up
    assert cp.keep_count(16, 0.25, divisor=8) == 16
    assert cp.keep_count(10, 0.95) == 1 and cp.keep_count(4, 0.5, divisor=8) == 4
    assert list(cp.select([0.5, 2.0, 2.0, 0.1], 2)) == [1, 2]


def test_channel_prune_errors(mnv2):
    with pytest.raises(ValueError, match="exactly one of"):
        cp.channel_prune(mnv2, ratio=0.2, target_macs_fraction=0.5)
    with pytest.raises(ValueError, match="criterion must be one of l1, bn_gamma"):
        cp.channel_prune(mnv2, ratio=0.2, criterion="l2")
    with pytest.raises(ValueError, match="'block1_project' is not the source of a prunable"):
        cp.channel_prune(mnv2, keep={"block1_project": [0]})
    with pytest.raises(ValueError, match="out of reach"):
        cp.channel_prune(mnv2, target_macs_fraction=0.01)


# ---------------------------------------------------------------- SVD


def test_svd_full_rank_reproduces_outputs(mnv1):
    new, report = lowrank.svd_factorize(mnv1, energy=1.0, only_if_smaller=False)
    assert report["replaced"] == 14  # 13 pointwise convs + the classifier
    assert "block1_pw_lowrank" in [layer.name for layer in new.layers]
    x = _images()
    expected = mnv1(x, training=False).numpy()
    np.testing.assert_allclose(new(x, training=False).numpy(), expected, atol=1e-4)
    assert np.abs(expected).max() > 1e-2
    # by default nothing is replaced at full rank: it would not save anything
    same, report = lowrank.svd_factorize(mnv1, energy=1.0)
    assert report["replaced"] == 0 and same is mnv1


def test_svd_rank_deficient_kernel_is_exact_at_its_rank():
    rng = np.random.default_rng(0)
    inputs = keras.Input((16,))
    hidden = layers.Dense(64, activation="relu", name="fc1")(inputs)
    model = keras.Model(inputs, layers.Dense(32, name="fc2")(hidden))
    kernel = (rng.normal(size=(64, 4)) @ rng.normal(size=(4, 32))).astype(np.float32)
    model.get_layer("fc2").set_weights([kernel, rng.normal(size=32).astype(np.float32)])
    new, report = lowrank.svd_factorize(model, energy=0.999999, layers=["fc2"])
    row = report["layers"][0]
    assert (row["rank"], row["replaced"], row["weights_after"]) == (4, True, 4 * (64 + 32))
    assert new.get_layer("fc2_lowrank").get_weights()[0].shape == (64, 4)
    x = rng.normal(size=(8, 16)).astype(np.float32)
    np.testing.assert_allclose(new(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)
    saved = profile_model(model)["macs"] - profile_model(new)["macs"]
    assert saved == 64 * 32 - 4 * (64 + 32)


def test_svd_rank_rule_and_errors(mnv2):
    assert lowrank.rank_for_energy([3.0, 2.0, 1.0], 0.9) == 2   # 9+4 of 14 = 0.93
    assert lowrank.rank_for_energy([3.0, 2.0, 1.0], 0.5) == 1   # 9 of 14 = 0.64
    assert lowrank.rank_for_energy([3.0, 2.0, 1.0], 1.0) == 3
    with pytest.raises(ValueError, match="'block1_dw' .*cannot be factorised"):
        lowrank.svd_factorize(mnv2, layers=["block1_dw"])
    with pytest.raises(ValueError, match="energy must be in"):
        lowrank.svd_factorize(mnv2, energy=0.0)


# ---------------------------------------------------------------- CLI on a run directory


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A minimal training run written by hand: config.json + model.keras."""
    path = tmp_path_factory.mktemp("runs") / "tiny"
    path.mkdir()
    model = _model("mobilenet_v1", 0.25)
    model.save(path / "model.keras")
    config = {"model": "mobilenet_v1", "data": "synthetic:train=4,val=3", "resolution": RES,
              "mean": [127.5] * 3, "std": [64.0] * 3, "num_classes": 10, "batch_size": 8,
              "optimizer": "adam", "lr": 1e-3, "scaled_lr": 1e-3, "label_smoothing": 0.1,
              "model_kwargs": {"alpha": 0.25, "resolution": RES, "num_classes": 10}}
    (path / "config.json").write_text(json.dumps(config))
    return path


def _invoke(*args):
    from click.testing import CliRunner

    from mobilekit.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow  # ~45 s of pruning fine-tune; the library prune tests stay fast
def test_cli_prune_writes_a_run_directory(run_dir):
    out = run_dir.parent / "pruned"
    result = _invoke("compress", "prune", run_dir, "--sparsity", "0.6", "--epochs", "1",
                     "--frequency", "1", "--precise-bn", "2", "--out", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sparsity"]["sparsity"] > 0.4
    rows = {r["name"]: r for r in metrics["sparsity"]["layers"]}
    assert rows["block2_pw"]["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert metrics["tflite_fp32_gzip_bytes"] < metrics["source_tflite_fp32_gzip_bytes"]
    assert 0 <= metrics["source_val_accuracy"] <= 1 and 0 <= metrics["val_accuracy"] <= 1
    config = json.loads((out / "config.json").read_text())
    assert config["compression"]["method"] == "pruned" and config["mean"] == [127.5] * 3
    saved = keras.models.load_model(out / "model.keras", compile=False)
    assert not pruning.is_pruning_wrapped(saved)
    assert pruning.sparsity_report(saved)["zeros"] == metrics["sparsity"]["zeros"]
    assert "gzip" in result.output
    again = _invoke("compress", "prune", run_dir, "--out", out)
    assert again.exit_code == 2 and "exists and is not an empty directory" in again.output


def test_cli_channel_prune_and_svd(run_dir):
    out = run_dir.parent / "cp"
    result = _invoke("compress", "channel-prune", run_dir, "--macs-fraction", "0.6",
                     "--epochs", "0", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output[result.output.index("{"):])
    assert metrics["macs_after"] <= 0.6 * metrics["macs_before"]
    saved = keras.models.load_model(out / "model.keras", compile=False)
    assert profile_model(saved)["macs"] == metrics["macs_after"]
    out = run_dir.parent / "svd"
    result = _invoke("compress", "svd", run_dir, "--energy", "0.5", "--epochs", "0",
                     "--out", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["factorized"] > 0 and metrics["params_after"] < metrics["params_before"]
    assert "factorised layers" in result.output
    missing = _invoke("compress", "svd", run_dir.parent / "nope")
    assert missing.exit_code == 2 and "does not exist" in missing.output
