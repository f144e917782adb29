"""Resolve a model spec from the command line: a timm name, ``module:factory``, or the bundled
pretrained EfficientNet-Lite0 (``lite0-pretrained``)."""
from __future__ import annotations

import importlib
from pathlib import Path

import timm
import torch
from torch import nn

__all__ = ["BUNDLED", "load_model"]

#: name of the bundled pretrained model (ImageNet EfficientNet-Lite0, offline)
BUNDLED = "lite0-pretrained"


def _factory(spec: str) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import model factory {spec!r}: {err}") from None
    model = factory()
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec!r} returned {type(model).__name__}, not an nn.Module")
    return model


def load_weights(model: nn.Module, weights: str | Path, name: str) -> nn.Module:
    """Load the state dict in file ``weights`` (or its ``"state_dict"``) into ``model``, after
    checking every key and shape: a file that does not fit leaves ``model`` untouched and raises
    ``ValueError`` naming the problem (``name`` names the model in the message)."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for unreadable files
        raise ValueError(f"cannot read weights {weights}: {str(err).splitlines()[0]}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"weights {weights} hold no state dict")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or bad:
        what = f"{len(missing)} missing keys (e.g. {missing[0]})" if missing else \
            f"shape mismatch at {bad[0]}: {tuple(state[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}"
        raise ValueError(f"weights {weights} do not fit {name}: {what}")
    model.load_state_dict(state, strict=False)
    return model


def load_model(spec: str, weights: str | Path | None = None) -> nn.Module:
    """Build the model named by ``spec`` and optionally load a state dict from ``weights``.

    The weights file is read and checked (keys and shapes) before anything is copied.
    """
    if spec == BUNDLED:
        from .pretrained import load_efficientnet_lite0
        model = load_efficientnet_lite0()
    elif ":" in spec:
        model = _factory(spec)
    elif timm.is_model(spec):
        model = timm.create_model(spec, pretrained=False)
    else:
        raise ValueError(f"unknown model {spec!r}: not a timm model name, 'module:factory' or {BUNDLED!r}")
    if weights is not None:
        load_weights(model, weights, spec)
    return model.eval()
