"""Models: the small reference CNNs of the tests, demo and benchmarks (:mod:`.small_cnn`), the
bundled offline pretrained EfficientNet-Lite0 (:mod:`.pretrained`) and the command line's model
specs (:mod:`.model_spec`: a timm name, ``module:factory`` or the bundled model)."""
from .pretrained import load_efficientnet_lite0, sample_images
from .small_cnn import SmallCNN

__all__ = ["SmallCNN", "load_efficientnet_lite0", "sample_images"]
