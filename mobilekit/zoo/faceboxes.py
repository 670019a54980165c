"""FaceBoxes face detector in the zoo (task="detection"); the model lives in
mobilekit.detection.model."""
from mobilekit.zoo.registry import register_model


@register_model("faceboxes", "FaceBoxes", 1024, min_resolution=128, task="detection")
def faceboxes(input_shape, num_classes=2, include_top=True, dropout=None, alpha=1.0,
              classifier_activation=None, backbone=None):
    """FaceBoxes (arXiv:1708.05234). Outputs loc [N, A, 4] and conf [N, A, 2] logits;
    `backbone="mobilenet_v2"` (with alpha) swaps RDCL+MSCL for a zoo backbone's stride-32
    map plus FaceBoxes' extra stride-2 convs. `dropout` and `classifier_activation` do not
    apply to a detector and must stay None."""
    from mobilekit.detection.model import build_faceboxes

    if num_classes != 2:
        raise ValueError(f"faceboxes has two classes (background, face): num_classes must be 2; "
                         f"got {num_classes!r}")
    for what, value in (("dropout", dropout), ("classifier_activation", classifier_activation)):
        if value is not None:
            raise ValueError(f"{what} does not apply to faceboxes; accepted: None; got {value!r}")
    return build_faceboxes(input_shape, alpha=alpha, backbone=backbone, include_top=include_top)


def profile_extras(input_shape=None, resolution=None, **_):
    """Detector-only profile fields: anchors and detection-map sizes at this input."""
    from mobilekit.detection.anchors import feature_map_sizes, num_anchors

    if input_shape is not None:
        size = tuple(input_shape[:2])
    else:
        r = 1024 if resolution is None else resolution
        size = (r, r)
    return {"num_anchors": num_anchors(size),
            "detection_maps": [list(s) for s in feature_map_sizes(size)]}


faceboxes.profile_extras = profile_extras
