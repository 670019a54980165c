"""The model zoo: importing this package registers every family."""
from mobilekit.zoo import efficientnet, mnasnet, mobilenet  # noqa: F401
from mobilekit.zoo import shufflenet, squeezenet  # noqa: F401
from mobilekit.zoo import faceboxes  # noqa: F401
from mobilekit.zoo import ghostnet, references, regnet, shiftnet  # noqa: F401
from mobilekit.zoo import mbspace  # noqa: F401
from mobilekit.zoo.registry import create_model, get_card, list_models, register_model

__all__ = ["create_model", "get_card", "list_models", "register_model"]
