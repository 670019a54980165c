"""The one registry of zoo models, their kwargs validation and their model cards."""
import inspect
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mobilekit.errors import check_choice, check_range, unknown_name

CARDS_DIR = Path(__file__).resolve().parents[2] / "models"
COMMON_KWARGS = ("alpha", "input_shape", "resolution", "num_classes", "include_top", "dropout",
                 "classifier_activation", "weights")


@dataclass
class ModelEntry:
    name: str
    family: str
    builder: object
    default_resolution: int
    min_resolution: int = 32
    alphas: tuple | None = None  # None: any alpha in (0, 4]
    task: str = "classification"
    defaults: dict = field(default_factory=dict)

    @property
    def extra_kwargs(self):
        params = inspect.signature(self.builder).parameters
        return tuple(p for p in params if p not in COMMON_KWARGS)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name, family, default_resolution, **options):
    """Decorator: add a builder `fn(input_shape, num_classes, include_top, dropout, alpha, ...)`."""

    def decorate(builder):
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, family, builder, default_resolution, **options)
        return builder

    return decorate


def _load_zoo():
    import mobilekit.zoo  # noqa: F401  (importing the package registers every family)


def list_models(task=None):
    """Names of every registered model, sorted; optionally only one task."""
    _load_zoo()
    return sorted(n for n, e in _REGISTRY.items() if task is None or e.task == task)


def get_entry(name):
    _load_zoo()
    if name not in _REGISTRY:
        raise unknown_name("model", name, _REGISTRY)
    return _REGISTRY[name]


def get_card(name):
    """The model card (TOML) of a zoo entry, as a dict."""
    get_entry(name)
    path = CARDS_DIR / f"{name}.toml"
    if not path.exists():
        raise FileNotFoundError(f"no model card for {name!r} at {path}")
    with open(path, "rb") as f:
        return tomllib.load(f)


def resolve_input_shape(entry, input_shape=None, resolution=None):
    if input_shape is not None and resolution is not None:
        raise ValueError("give either input_shape or resolution, not both")
    if input_shape is None:
        r = entry.default_resolution if resolution is None else resolution
        input_shape = (r, r, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(not isinstance(d, int) for d in input_shape):
        raise ValueError(f"input_shape must be (height, width, channels) integers; got {input_shape!r}")
    h, w, c = input_shape
    for what, v in (("resolution (height)", h), ("resolution (width)", w)):
        if v < entry.min_resolution:
            raise ValueError(f"{what} must be >= {entry.min_resolution} for {entry.name}; got {v}")
    if c < 1:
        raise ValueError(f"input channels must be >= 1; got {c}")
    return input_shape


def model_alpha(name, alpha=None):
    """The width multiplier create_model uses for `name` (alpha, else its default)."""
    entry = get_entry(name)
    params = inspect.signature(entry.builder).parameters
    if alpha is not None:
        return alpha
    return entry.defaults.get("alpha", params["alpha"].default if "alpha" in params else 1.0)


def create_model(name, **kwargs):
    """Build a zoo model as a functional tf_keras model.

    Common kwargs: alpha (width multiplier), input_shape or resolution, num_classes,
    include_top, dropout, classifier_activation (None = logits), weights ("imagenet":
    keras.applications' published file, fetched into Keras' cache; or a local .h5/.keras
    file of the matching keras.applications model; another num_classes keeps the backbone
    and starts a new head). Family-specific extras
    are listed by `mobilekit models` and in each model card.
    """
    entry = get_entry(name)
    kwargs = dict(kwargs)
    unknown = set(kwargs) - set(COMMON_KWARGS) - set(entry.extra_kwargs)
    if unknown:
        bad = sorted(unknown)[0]
        raise unknown_name(f"argument for {name}", bad, set(COMMON_KWARGS) | set(entry.extra_kwargs))
    input_shape = resolve_input_shape(entry, kwargs.pop("input_shape", None),
                                      kwargs.pop("resolution", None))
    weights = kwargs.pop("weights", None)
    call = dict(entry.defaults)
    call.update(kwargs)
    params = inspect.signature(entry.builder).parameters
    if "alpha" in params:
        alpha = call.get("alpha", params["alpha"].default)
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
            raise ValueError(f"alpha must be a number; got {alpha!r}")
        if entry.alphas is not None:
            check_choice(f"alpha for {name}", alpha, entry.alphas)
        else:
            check_range("alpha", alpha, 0, 4)
    num_classes = call.get("num_classes", 1000)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
    dropout = call.get("dropout")
    if dropout is not None:
        check_range("dropout", dropout, 0, 1, low_inclusive=True, high_inclusive=False)
    model = entry.builder(input_shape=input_shape, **call)
    if weights is not None:
        from mobilekit.zoo.weights import import_weights, resolve_weights

        twin = {k: call[k] for k in ("num_classes", "include_top", "alpha", "minimalistic")
                if k in call}
        if weights == "imagenet":
            weights = resolve_weights(name, weights, alpha=model_alpha(name, call.get("alpha")),
                                      resolution=input_shape[0],
                                      minimalistic=call.get("minimalistic", False))[0]
        import_weights(model, weights, name=name, **twin)
    return model
