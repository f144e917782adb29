"""Lightning callbacks for ``import pytorch_lightning`` (for ``lightning.pytorch`` use :mod:`pan_repair.lightning`).

Each callback is written once as a namespace-free body and made concrete per namespace by
:func:`~pan_repair.callbacks._namespaces.concrete_callback` (one line each, see there).
"""
from ._namespaces import concrete_callback
from .history import PanHistory, pan_id
from .monitor import MONITOR_FORMAT, PANMonitorBase, read_monitor_json

__all__ = ["PANMonitor", "PANMonitorBase", "PanHistory", "pan_id", "read_monitor_json", "MONITOR_FORMAT"]

PANMonitor = concrete_callback(PANMonitorBase, "pytorch_lightning", __name__)
