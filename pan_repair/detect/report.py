"""Result types of the detector: :class:`Pan` and :class:`PanReport` (JSON round trip)."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["Pan", "PanReport", "LayerInfo", "SIDES", "KINDS"]

SIDES = ("top", "bottom", "left", "right")
#: ``border``: the filter's own padding makes it respond at the border (a border detector).
#: ``position``: its pooled response encodes where content lies (often inherited from upstream).
KINDS = ("border", "position")


@dataclass(frozen=True)
class Pan:
    """One Padding Aware Neuron: output ``channel`` of convolution ``layer``.

    Attributes:
        layer: qualified module name (``model.get_submodule(layer)``).
        channel: output channel index.
        sides: borders it responds to, a subset of ``("top", "bottom", "left", "right")``.
        sign: +1 if it fires at the border (or for content near it), -1 if silenced there.
        score: the score of its ``kind`` (see :func:`pan_repair.find_pans`).
        kind: ``"border"`` or ``"position"``.
        border_score: border deviation in units of the channel's std or content response, whichever
            is larger (0 when the layer makes no border).
        position_score: share of pooled-response variance explained by placement, in [0, 1].
        share: the channel's share of the model's padding dependence (first-order, see
            :func:`pan_repair.find_pans`), in [0, 1]; 0 if not measured.
    """

    layer: str
    channel: int
    sides: tuple[str, ...]
    sign: int
    score: float
    kind: str
    border_score: float = 0.0
    position_score: float = 0.0
    share: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Pan":
        known = {f.name for f in fields(cls)}  # reports of earlier versions carry other keys
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["sides"] = tuple(kwargs["sides"])
        return cls(**kwargs)


@dataclass(frozen=True)
class LayerInfo:
    """One analysed convolution: its type, filters and padding."""

    name: str
    type: str
    out_channels: int
    padding_mode: str
    pads: tuple[int, int, int, int]
    makes_border: bool


@dataclass
class PanReport:
    """What :func:`pan_repair.find_pans` found in a model.

    ``scores`` holds every channel's scores, ``{layer: {"border": [...], "position": [...],
    "share": [...]}}``, for score distributions and threshold studies. ``assumptions`` says what the
    scan assumed or measured on (data or the input convention of its probes); ``unmeasured``, per
    layer, a score that could not be measured at this size and why; ``padding_dependence`` the
    model-level dependence on padding (``output_shift``, ``flip_rate`` under replicate padding,
    ``images``), None if not measured.
    """

    pans: list[Pan]
    layers: list[LayerInfo]
    input_size: tuple[int, int, int]
    border_threshold: float
    position_threshold: float
    scores: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    unmeasured: dict[str, str] = field(default_factory=dict)
    padding_dependence: dict[str, Any] | None = None

    @property
    def count(self) -> int:
        return len(self.pans)

    @property
    def total_filters(self) -> int:
        return sum(layer.out_channels for layer in self.layers)

    @property
    def fraction(self) -> float:
        """PANs / filters, in [0, 1]."""
        return self.count / self.total_filters if self.total_filters else 0.0

    def by_layer(self) -> dict[str, list[Pan]]:
        """PANs grouped by layer, in network order (layers without PANs omitted)."""
        out: dict[str, list[Pan]] = {}
        order = {layer.name: i for i, layer in enumerate(self.layers)}
        for pan in sorted(self.pans, key=lambda p: (order.get(p.layer, 0), p.channel)):
            out.setdefault(pan.layer, []).append(pan)
        return out

    def of_kind(self, kind: str) -> list[Pan]:
        if kind not in KINDS:
            raise ValueError(f"unknown PAN kind {kind!r}; expected one of {KINDS}")
        return [p for p in self.pans if p.kind == kind]

    def side_counts(self) -> dict[str, int]:
        """How many PANs respond to each side."""
        counts = Counter(side for p in self.pans for side in p.sides)
        return {side: counts.get(side, 0) for side in SIDES}

    def strongest(self, n: int = 8, kind: str | None = None) -> list[Pan]:
        pans = self.pans if kind is None else self.of_kind(kind)
        return sorted(pans, key=lambda p: p.score, reverse=True)[:n]

    def ranked(self, n: int = 10) -> list[tuple[str, int, float]]:
        """The ``n`` channels (PANs or not) with the largest share of the padding dependence:
        ``(layer, channel, share)``, largest first."""
        shares = [(layer, ch, v) for layer, s in self.scores.items() for ch, v in enumerate(s.get("share", []))]
        return sorted(shares, key=lambda t: t[2], reverse=True)[:n]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pans": [asdict(p) for p in self.pans],
            "layers": [asdict(layer) for layer in self.layers],
            "input_size": list(self.input_size),
            "border_threshold": self.border_threshold,
            "position_threshold": self.position_threshold,
            "scores": self.scores,
            "notes": list(self.notes),
            "skipped": list(self.skipped),
            "assumptions": list(self.assumptions),
            "unmeasured": dict(self.unmeasured),
            "padding_dependence": self.padding_dependence,
            "count": self.count,
            "total_filters": self.total_filters,
            "fraction": self.fraction,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PanReport":
        try:
            return cls(
                pans=[Pan.from_dict(p) for p in d["pans"]],
                layers=[LayerInfo(**{**l, "pads": tuple(l["pads"])}) for l in d["layers"]],
                input_size=tuple(d["input_size"]),
                border_threshold=float(d["border_threshold"]),
                position_threshold=float(d["position_threshold"]),
                scores=d.get("scores", {}),
                notes=list(d.get("notes", [])),
                skipped=list(d.get("skipped", [])),
                assumptions=list(d.get("assumptions", [])),
                unmeasured=dict(d.get("unmeasured", {})),
                padding_dependence=d.get("padding_dependence"),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a PanReport dictionary: {err}") from None

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON (atomically: a temporary file renamed into place)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PanReport":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read PanReport from {path}: {err}") from None

    def __repr__(self) -> str:
        kinds = Counter(p.kind for p in self.pans)
        dep = self.padding_dependence
        tail = "" if not dep else f"; output shift {100 * dep['output_shift']:.1f}%" + (
            "" if dep.get("flip_rate") is None else f", flips {100 * dep['flip_rate']:.1f}%") + " under replicate padding"
        return (f"PanReport({self.count} PANs in {self.total_filters} filters "
                f"({100 * self.fraction:.2f}%): {kinds.get('border', 0)} border, "
                f"{kinds.get('position', 0)} position; {len(self.by_layer())} layers{tail})")

    def __str__(self) -> str:
        lines = [repr(self)] + [f"  assumed: {a}" for a in self.assumptions]
        lines += [f"  {layer}: {why}" for layer, why in self.unmeasured.items()]
        top = [t for t in self.ranked(3) if t[2] > 0]
        if top:
            lines.append("  largest shares of the padding dependence: "
                         + ", ".join(f"{layer}[{ch}] {100 * v:.1f}%" for layer, ch, v in top))
        return "\n".join(lines)
