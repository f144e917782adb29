"""Read back what an offline W&B run logged (wandb 0.31 ships no Python reader).

An offline run writes ``wandb/offline-run-<YYYYMMDD_HHMMSS>-<id>/run-<id>.wandb``:

* a 7-byte file header ``struct "<4sHB"``: ident ``b":W&B"``, magic ``0xBEE1``, version ``0``;
* then LevelDB-log framing, counted from the start of the file: 32 KiB blocks, each
  record chunk a 7-byte header ``"<IHB"`` (checksum, length, type) and its payload.
  Types FULL=1, FIRST=2, MIDDLE=3, LAST=4; a block tail shorter than a header is zero
  padding. Unlike LevelDB the checksum is plain CRC-32 (zlib), seeded with the CRC-32 of
  the type byte, unmasked (the format of the reader wandb removed,
  ``wandb/sdk/internal/datastore.py``, still written by wandb-core 0.31);
* each reassembled payload is a :class:`wandb.proto.wandb_internal_pb2.Record`.

Nested keys (media such as ``{"_type": "table-file", "path": ...}``) come back as nested
dicts. Table rows are not in the record file but in ``files/<path>``: use
:meth:`OfflineRun.read_media_json`.

Example::

    run = read_offline_run(latest_run("/tmp/logs"))
    losses = [row["train_loss"] for row in run.history if "train_loss" in row]
"""
from __future__ import annotations

import json
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator


__all__ = ["OfflineRun", "read_offline_run", "latest_run", "iter_records"]

_FILE_HEADER = struct.Struct("<4sHB")
_FILE_IDENT, _FILE_MAGIC, _FILE_VERSION = b":W&B", 0xBEE1, 0
_CHUNK_HEADER = struct.Struct("<IHB")
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_TYPE_SEED = {t: zlib.crc32(bytes([t])) for t in (_FULL, _FIRST, _MIDDLE, _LAST)}
_INTERNAL_KEY = "_wandb"  # wandb's own bookkeeping in config and summary
_SETTLE_S = 1.0  # a file ending mid-record is re-read until it has not grown for this long


class _TruncatedError(ValueError):
    """The file ends inside a record: still being written, or cut off."""


@dataclass
class OfflineRun:
    """What one offline run logged.

    Attributes:
        path: the ``run-<id>.wandb`` file.
        run_id, name, project, group: from the run record (``name``: the display name;
            ``name`` and ``group`` are ``""`` when unset).
        config: user config (nested dicts), without wandb's ``_wandb`` entry.
        summary: final summary (nested dicts), without ``_wandb``.
        history: one dict per ``log`` step, key -> decoded JSON value, including ``_step``
            (and wandb's ``_runtime``/``_timestamp``).
        files: paths, relative to the run's ``files/`` folder, of the files the run saved.
    """

    path: Path
    run_id: str = ""
    name: str = ""
    project: str = ""
    group: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def files_dir(self) -> Path:
        return self.path.parent / "files"

    def read_media_json(self, value: dict[str, Any]) -> Any:
        """Load the JSON file a logged media value points to (``value["path"]``).

        For a ``wandb.Table`` (``_type == "table-file"``) this is ``{"columns": [...], "data": [[...]]}``.
        """
        if "path" not in value:
            raise ValueError(f"logged value has no 'path' (type {value.get('_type')!r}): not a file-backed media value")
        return json.loads((self.files_dir / value["path"]).read_text())


def iter_records(path: str | os.PathLike) -> Iterator[Any]:
    """Yield every :class:`Record` of a ``.wandb`` file, in order; ``ValueError`` if it is corrupt.
    (wandb and protobuf are imported here: importing pan_repair does not need them.)"""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    data = _complete_bytes(path)
    for offset, payload in _payloads(data, path):
        record = pb.Record()
        try:
            record.ParseFromString(payload)
        except DecodeError:
            raise ValueError(f"{path}: corrupt W&B record at byte {offset} (not a Record protobuf)") from None
        yield record


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read W&B run file {path}: {err.strerror}") from None


def _complete_bytes(path: Path) -> bytes:
    """The file's bytes, framing checked. wandb-core may still be writing the file when
    ``run.finish()`` returns (offline, wandb 0.31: only the header, or whole 32 KiB blocks, then
    the rest ~10 ms later), so a file with no record or ending mid-record is re-read while it
    grows; one that stops growing is empty or truncated."""
    data, settled = _read(path), time.monotonic() + _SETTLE_S
    while True:
        _check_file_header(data, path)
        try:
            for _ in _payloads(data, path):
                pass
            if len(data) > _FILE_HEADER.size:
                return data
            if time.monotonic() >= settled:
                raise ValueError(f"{path}: W&B run file holds no records")
        except _TruncatedError:
            if time.monotonic() >= settled:
                raise
        time.sleep(0.02)
        again = _read(path)
        if len(again) != len(data):
            settled = time.monotonic() + _SETTLE_S
        data = again


def _check_file_header(data: bytes, path: Path) -> None:
    if len(data) < _FILE_HEADER.size:
        raise ValueError(f"{path}: not a W&B run file (only {len(data)} bytes)")
    ident, magic, version = _FILE_HEADER.unpack_from(data)
    if ident != _FILE_IDENT or magic != _FILE_MAGIC:
        raise ValueError(f"{path}: not a W&B run file (header {data[:_FILE_HEADER.size]!r})")
    if version != _FILE_VERSION:
        raise ValueError(f"{path}: unsupported W&B run file version {version} (expected {_FILE_VERSION})")


def _payloads(data: bytes, path: Path) -> Iterator[tuple[int, bytes]]:
    """Reassemble LevelDB-log chunks into (offset of first chunk, payload)."""
    pos, parts, start = _FILE_HEADER.size, [], 0
    while pos < len(data):
        block_left = _BLOCK - pos % _BLOCK
        if block_left < _CHUNK_HEADER.size:  # zero padding at the block tail
            pos += block_left
            continue
        if pos + _CHUNK_HEADER.size > len(data):
            raise _TruncatedError(f"{path}: truncated W&B record header at byte {pos}")
        checksum, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        body = data[pos + _CHUNK_HEADER.size:pos + _CHUNK_HEADER.size + length]
        if pos + _CHUNK_HEADER.size + length > len(data):
            raise _TruncatedError(f"{path}: truncated W&B record at byte {pos}")
        if kind not in _TYPE_SEED or zlib.crc32(body, _TYPE_SEED[kind]) != checksum:
            raise ValueError(f"{path}: corrupt W&B record at byte {pos} (bad type, length or checksum)")
        if kind in (_FULL, _FIRST):
            if parts:
                raise ValueError(f"{path}: corrupt W&B record at byte {pos} (previous record unfinished)")
            start = pos
        elif not parts:
            raise ValueError(f"{path}: corrupt W&B record at byte {pos} (continuation without a start)")
        parts.append(body)
        if kind in (_FULL, _LAST):
            yield start, b"".join(parts)
            parts = []
        pos += _CHUNK_HEADER.size + length
    if parts:
        raise _TruncatedError(f"{path}: truncated W&B record at byte {start}")


def _set_item(target: dict[str, Any], item: Any) -> None:
    """Apply one ``key``/``nested_key`` + ``value_json`` item to a (nested) dict."""
    keys = list(item.nested_key) or [item.key]
    for key in keys[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[keys[-1]] = json.loads(item.value_json)


def _remove_item(target: dict[str, Any], item: Any) -> None:
    keys = list(item.nested_key) or [item.key]
    for key in keys[:-1]:
        target = target.get(key)
        if not isinstance(target, dict):
            return
    target.pop(keys[-1], None)


def _apply(target: dict[str, Any], update: Any) -> None:
    """Apply a ConfigRecord/SummaryRecord (``update`` then ``remove``)."""
    for item in update.update:
        _set_item(target, item)
    for item in update.remove:
        _remove_item(target, item)


def read_offline_run(run_dir_or_file: str | os.PathLike) -> OfflineRun:
    """Read an ``offline-run-*`` (or synced ``run-*``) folder, or its ``run-*.wandb`` file, into an :class:`OfflineRun`.

    Raises:
        ValueError: missing folder/file, or a corrupt file.
    """
    path = Path(run_dir_or_file)
    if path.is_dir():
        found = sorted(path.glob("run-*.wandb"))
        if len(found) != 1:
            raise ValueError(f"expected one run-*.wandb file in {path}, found {len(found)}")
        path = found[0]
    run = OfflineRun(path=path)
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.name = record.run.run_id, record.run.display_name
            run.project, run.group = record.run.project, record.run.run_group
            _apply(run.config, record.run.config)
        elif kind == "config":
            _apply(run.config, record.config)
        elif kind == "summary":
            _apply(run.summary, record.summary)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set_item(row, item)
            row.setdefault("_step", record.history.step.num)
            run.history.append(row)
        elif kind == "files":
            run.files.extend(f.path for f in record.files.files if f.path not in run.files)
    run.config.pop(_INTERNAL_KEY, None)
    run.summary.pop(_INTERNAL_KEY, None)
    return run


def latest_run(root: str | os.PathLike) -> Path:
    """Newest ``offline-run-*`` folder under ``root/wandb`` (or under ``root`` if it is the ``wandb`` folder).

    Newest = latest start time in the folder name (``offline-run-YYYYMMDD_HHMMSS-id``),
    ties broken by the run file's modification time.
    """
    root = Path(root)
    base = root / "wandb" if (root / "wandb").is_dir() else root
    runs = [d for d in base.glob("offline-run-*") if d.is_dir()]
    if not runs:
        raise ValueError(f"no offline-run-* folder under {base}")

    def started(run_dir: Path) -> tuple[str, int]:
        stamp = run_dir.name[len("offline-run-"):].rsplit("-", 1)[0]
        files = list(run_dir.glob("run-*.wandb"))
        return stamp, max((f.stat().st_mtime_ns for f in files), default=0)

    return max(runs, key=started)
