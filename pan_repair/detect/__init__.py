"""Detection: the PAN detector (:func:`find_pans`, :mod:`.detector`, where the definition lives),
the images it runs on (:mod:`.probes`), how it runs a model (:mod:`.forward`), the hooks that gather
its per-layer statistics (:mod:`.recorder`), the position score's roll statistic and border-free
twin (:mod:`.position`), the model-level padding dependence (:mod:`.dependence`), its result types
(:class:`PanReport`, :mod:`.report`) and their plots (:mod:`.plotting`, matplotlib imported only
there). Knows nothing of repair, callbacks, models, data, runs or experiments."""
from .detector import (DEFAULT_BORDER_THRESHOLD, DEFAULT_DATA_BORDER_THRESHOLD, DEFAULT_DATA_POSITION_THRESHOLD,
                       DEFAULT_POSITION_THRESHOLD, find_pans)
from .report import KINDS, SIDES, LayerInfo, Pan, PanReport

__all__ = ["find_pans", "Pan", "PanReport", "LayerInfo", "SIDES", "KINDS", "DEFAULT_BORDER_THRESHOLD",
           "DEFAULT_DATA_BORDER_THRESHOLD", "DEFAULT_DATA_POSITION_THRESHOLD", "DEFAULT_POSITION_THRESHOLD"]
