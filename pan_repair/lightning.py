"""pan_repair's callbacks for ``import lightning.pytorch`` (the two Lightning namespaces reject
each other's callbacks; :mod:`pan_repair.callbacks` holds the ``pytorch_lightning`` ones).

Example::

    from lightning.pytorch import Trainer
    from pan_repair.lightning import PANMonitor

    trainer = Trainer(callbacks=[PANMonitor()])
"""
from .callbacks._namespaces import concrete_callback
from .callbacks.history import PanHistory
from .callbacks.monitor import PANMonitorBase, read_monitor_json

__all__ = ["PANMonitor", "PanHistory", "read_monitor_json"]

PANMonitor = concrete_callback(PANMonitorBase, "lightning.pytorch", __name__)
