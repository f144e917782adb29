"""Lightning callbacks for ``import pytorch_lightning`` (for ``lightning.pytorch`` use :mod:`pan_repair.lightning`).

Each callback is written once as a namespace-free body and made concrete per namespace by
:func:`~pan_repair.callbacks._namespaces.concrete_callback` (one line each, see there).
"""
from ._namespaces import concrete_callback
from .history import PanHistory, pan_id
from .consistency import PaddingConsistencyRegularizerBase
from .monitor import MONITOR_FORMAT, PANMonitorBase, read_monitor_json
from .padding_switch import PaddingSwitchBase
from .pruning import PANPruningBase
from .regularizer import PANRegularizerBase

__all__ = ["PANMonitor", "PaddingSwitch", "PANPruning", "PANRegularizer",
           "PaddingConsistencyRegularizer", "PANMonitorBase", "PaddingSwitchBase",
           "PANPruningBase", "PANRegularizerBase", "PanHistory", "pan_id", "read_monitor_json", "MONITOR_FORMAT"]

PANMonitor = concrete_callback(PANMonitorBase, "pytorch_lightning", __name__)
PaddingSwitch = concrete_callback(PaddingSwitchBase, "pytorch_lightning", __name__)
PANPruning = concrete_callback(PANPruningBase, "pytorch_lightning", __name__)
PANRegularizer = concrete_callback(PANRegularizerBase, "pytorch_lightning", __name__)
PaddingConsistencyRegularizer = concrete_callback(PaddingConsistencyRegularizerBase, "pytorch_lightning", __name__)
