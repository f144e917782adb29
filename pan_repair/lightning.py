"""pan_repair's callbacks for ``import lightning.pytorch`` (the two Lightning namespaces reject
each other's callbacks; :mod:`pan_repair.callbacks` holds the ``pytorch_lightning`` ones).

Example::

    from lightning.pytorch import Trainer
    from pan_repair.lightning import PANMonitor, PANPruning

    trainer = Trainer(callbacks=[PANMonitor(), PANPruning(apply_pruning=[0])])
"""
from .callbacks._namespaces import concrete_callback
from .callbacks.history import PanHistory
from .callbacks.consistency import PaddingConsistencyRegularizerBase
from .callbacks.monitor import PANMonitorBase, read_monitor_json
from .callbacks.padding_switch import PaddingSwitchBase
from .callbacks.pruning import PANPruningBase
from .callbacks.regularizer import PANRegularizerBase

__all__ = ["PANMonitor", "PaddingSwitch", "PANPruning", "PANRegularizer",
           "PaddingConsistencyRegularizer", "PanHistory", "read_monitor_json"]

PANMonitor = concrete_callback(PANMonitorBase, "lightning.pytorch", __name__)
PaddingSwitch = concrete_callback(PaddingSwitchBase, "lightning.pytorch", __name__)
PANPruning = concrete_callback(PANPruningBase, "lightning.pytorch", __name__)
PANRegularizer = concrete_callback(PANRegularizerBase, "lightning.pytorch", __name__)
PaddingConsistencyRegularizer = concrete_callback(PaddingConsistencyRegularizerBase, "lightning.pytorch", __name__)
