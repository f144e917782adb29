"""Layer-level knowledge shared by everything above it: how each supported layer type pads
(:mod:`.padding`), reading a model's state without changing it (:mod:`.module_state`), where a
padded convolution's border lies (:mod:`.border_geometry`) and switching a model's padding mode
(:mod:`.padding_switch`). Imports nothing else of pan_repair; re-exports :mod:`.padding`'s names."""
from .padding import (BORDER_MODES, BatchNormPairing, Padding, PadTracker, blank_forward, conv_bn_pairs, conv_layers,
                      conv_padding, effective_weight, layer_padding, pad_module_padding, pool_padding,
                      trained_bns, unsupported_layers, untrained_bn)

from .padding import __all__  # the same names
