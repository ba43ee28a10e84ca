"""Training checkpoints: atomic save, safe load (``weights_only=True``), refusal of foreign files.

API
---
- ``save_checkpoint(path, net, *, optimizer=None, epoch=0, meta=None, train_net=None) -> Path``: writes
  ``{"magic", "format_version", "input_encoding", "model_state", "optimizer_state", "epoch",
  "net_config", "meta"}`` and, with ``train_net``, ``"train_state"``: the weights the optimiser
  trains when ``net`` is their moving average (``TrainConfig.ema_decay``; ``model_state`` is then
  the average, the network every reader scores)
  atomically (:func:`crosslocate.fileio.atomic_write`: a crash never leaves a partial file under
  ``path``). ``net_config`` (JSON) is ``net.config.to_dict()`` when the net has one;
  ``meta`` is any JSON-able dict (resolved configs, init, metrics), stored as JSON text.
- ``read_checkpoint(path, map_location="cpu") -> dict``: the validated raw content with ``meta``
  and ``net_config`` decoded; :class:`~crosslocate.errors.CheckpointError` naming the path for
  missing, corrupt (random bytes, truncated) or foreign files (no magic, e.g. a plain state_dict)
  for a newer format version, and for weights trained on another input encoding
  (:data:`crosslocate.datasets.transforms.INPUT_ENCODING`; files without the key are version 1).
- ``load_checkpoint(path, net=None, *, optimizer=None, map_location="cpu", train_net=None) -> dict``: as
  ``read_checkpoint`` and loads the weights (strictly), the optimizer state and, into ``train_net``,
  ``train_state`` (refused when the file has none); a wrong architecture raises CheckpointError. Returns ``{"epoch", "meta", "net_config", "format_version"}``.
- ``load_network(path, map_location="cpu") -> (RetrievalNet, meta)``: rebuilds the network from
  the stored ``net_config`` alone (cirtorch's ``meta`` idea) and loads its weights.
- ``check_run_record(path, meta, *, query_set_id, finished=True, run_id=None)``: refuses (with
  :class:`~crosslocate.errors.CheckpointError`) a checkpoint an evaluation must not score: one
  whose run did not finish its planned epochs, one trained on another query set (``meta["query_set"]
  ["id"]``), one from another run, or one without these records (written before they existed).
  The training loop writes ``run_id``, ``epochs_planned`` and ``finished`` into every checkpoint's
  meta; the training flow adds ``query_set``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crosslocate.errors import CheckpointError
from crosslocate.fileio import atomic_write

logger = logging.getLogger(__name__)

#: Marks a file as a crosslocate checkpoint.
MAGIC = "crosslocate-checkpoint"
#: Layout version of the checkpoint dict; files with a larger version are refused.
FORMAT_VERSION = 1
_REQUIRED = ("magic", "format_version", "model_state", "epoch")


def save_checkpoint(
    path: str | os.PathLike[str],
    net: nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int = 0,
    meta: dict[str, Any] | None = None,
    train_net: nn.Module | None = None,
) -> Path:
    """Atomically write a checkpoint of ``net`` (and ``optimizer``) after ``epoch`` completed epochs;
    ``train_net``: the optimised weights when ``net`` is their moving average (stored as ``train_state``)."""
    out = Path(path)
    cfg = getattr(net, "config", None)
    to_dict = getattr(cfg, "to_dict", None)
    from crosslocate.datasets.transforms import INPUT_ENCODING

    state = {
        "magic": MAGIC,
        "format_version": FORMAT_VERSION,
        "input_encoding": INPUT_ENCODING,
        "model_state": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "epoch": int(epoch),
        "net_config": json.dumps(to_dict()) if callable(to_dict) else None,
        "meta": json.dumps(meta or {}, default=str),
    }
    if train_net is not None:
        state["train_state"] = {k: v.detach().cpu() for k, v in train_net.state_dict().items()}
    with atomic_write(out) as fh:
        torch.save(state, fh)
    logger.info("saved checkpoint %s (epoch %d)", out, epoch)
    return out


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint file without applying it; see the module docstring."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found; train first (crosslocate train) or fix the path")
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for foreign/corrupt bytes
        raise CheckpointError(
            f"{p}: not a readable torch checkpoint ({type(exc).__name__}: {exc}); delete it and retrain"
        ) from exc
    if not isinstance(obj, dict) or obj.get("magic") != MAGIC:
        raise CheckpointError(
            f"{p}: not a crosslocate checkpoint (no {MAGIC!r} magic key; a plain state_dict or another program's "
            "file?); use a checkpoint written by `crosslocate train`"
        )
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise CheckpointError(f"{p}: checkpoint lacks {missing}; the file is damaged, retrain")
    version = obj["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{p}: checkpoint format {version!r} is newer than this crosslocate ({FORMAT_VERSION})")
    from crosslocate.datasets.transforms import INPUT_ENCODING

    encoding = obj.get("input_encoding", 1)
    if encoding != INPUT_ENCODING:
        raise CheckpointError(
            f"{p}: the network was trained on input encoding {encoding!r}, this crosslocate encodes inputs as "
            f"version {INPUT_ENCODING} (see crosslocate.datasets.transforms); its descriptors would be meaningless. "
            "Retrain: delete the run folder (or pick another --work) and run `make train`"
        )
    try:
        obj["meta"] = json.loads(obj.get("meta") or "{}")
        obj["net_config"] = json.loads(obj["net_config"]) if obj.get("net_config") else None
    except (TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{p}: checkpoint meta/net_config is not valid JSON ({exc})") from exc
    return obj


def _arch_mismatch(stored: dict[str, Any] | None, net: nn.Module) -> list[str]:
    """Architecture fields whose stored value differs from ``net.config`` (init/input settings excluded)."""
    cfg = getattr(net, "config", None)
    if stored is None or not callable(getattr(cfg, "to_dict", None)):
        return []
    now = cfg.to_dict()  # type: ignore[union-attr]
    ignore = {"imagenet_weights", "init_seed", "input_size_px", "fov_scaling", "gem_p"}
    # a field newer than the checkpoint (absent there) had its default value when it was saved
    defaults = type(cfg)().to_dict()  # type: ignore[union-attr]
    return [
        f"{k}: checkpoint {stored.get(k, defaults.get(k))!r} vs net {now[k]!r}"
        for k in now
        if k not in ignore and stored.get(k, defaults.get(k)) != now[k]
    ]


def load_checkpoint(
    path: str | os.PathLike[str],
    net: nn.Module | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: Any = "cpu",
    train_net: nn.Module | None = None,
) -> dict[str, Any]:
    """Load weights into ``net``, state into ``optimizer`` and the optimised weights of a moving-average
    checkpoint into ``train_net`` (each when given); see the module docstring."""
    p = Path(path)
    obj = read_checkpoint(p, map_location=map_location)
    for target, key in ((net, "model_state"), (train_net, "train_state")):
        if target is None:
            continue
        if key not in obj:
            raise CheckpointError(
                f"{p}: checkpoint has no {key} (it was trained without a weight average, TrainConfig.ema_decay = 0); "
                "resume it with the settings it was trained with"
            )
        diff = _arch_mismatch(obj["net_config"], target)
        if diff:
            raise CheckpointError(f"{p}: checkpoint is for another architecture ({'; '.join(diff)})")
        try:
            target.load_state_dict(obj[key], strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{p}: weights do not fit this network ({exc})") from exc
    if optimizer is not None:
        if obj.get("optimizer_state") is None:
            raise CheckpointError(f"{p}: checkpoint has no optimizer state; cannot resume training from it")
        try:
            optimizer.load_state_dict(obj["optimizer_state"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{p}: optimizer state does not fit ({exc})") from exc
    return {
        "epoch": int(obj["epoch"]),
        "meta": obj["meta"],
        "net_config": obj["net_config"],
        "format_version": obj["format_version"],
    }


def load_network(path: str | os.PathLike[str], map_location: Any = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network of a checkpoint from its stored ``net_config`` and load the weights.

    Returns ``(net, meta)``; ``net`` is in eval mode on ``map_location``. ImageNet weights are not
    re-read (the trained weights replace them), so the original weights file need not exist.
    """
    from crosslocate.errors import ConfigError
    from crosslocate.model.config import NetConfig
    from crosslocate.model.net import RetrievalNet

    p = Path(path)
    obj = read_checkpoint(p, map_location="cpu")
    if obj["net_config"] is None:
        raise CheckpointError(f"{p}: checkpoint has no net_config; it was saved from a foreign network")
    try:
        cfg = NetConfig.from_dict({**obj["net_config"], "imagenet_weights": None})
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{p}: stored net_config is invalid ({exc})") from exc
    net = RetrievalNet(cfg)
    try:
        net.load_state_dict(obj["model_state"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{p}: weights do not fit the stored net_config ({exc})") from exc
    net.meta["init"] = {"kind": "checkpoint", "path": str(p), "epoch": int(obj["epoch"])}
    net.init_source = f"checkpoint {p} epoch={int(obj['epoch'])}"
    net.eval()
    return net.to(map_location), obj["meta"]


def check_run_record(
    path: str | os.PathLike[str],
    meta: dict[str, Any],
    *,
    query_set_id: str,
    finished: bool = True,
    run_id: str | None = None,
) -> None:
    """Refuse a checkpoint that must not be evaluated on the query set ``query_set_id``.

    Parameters
    ----------
    path : path
        The checkpoint (for the messages).
    meta : dict
        Its decoded ``meta`` (:func:`read_checkpoint` / :func:`load_checkpoint`).
    query_set_id : str
        Identity of the query set being evaluated (the training flow's ``query_set["id"]``: poses,
        image bytes and splits).
    finished : bool
        Require ``meta["finished"]`` (the run completed its planned epochs).
    run_id : str or None
        Require this ``meta["run_id"]`` (e.g. ``best.pt`` must come from the run of ``checkpoint.pt``).

    Raises
    ------
    CheckpointError
        Naming the path, what differs and how to fix it.
    """
    p = Path(path)
    record = meta.get("query_set") if isinstance(meta, dict) else None
    if not isinstance(record, dict) or "finished" not in meta or "run_id" not in meta:
        raise CheckpointError(
            f"{p}: the checkpoint does not record its query set and whether its run finished (written by an older "
            "crosslocate); retrain: delete the run folder (or pick another --work) and run `crosslocate train`"
        )
    if record.get("id") != query_set_id:
        raise CheckpointError(
            f"{p}: trained on another query set ({record.get('source', '?')}, {record.get('n_queries', '?')} queries, "
            f"id {str(record.get('id'))[:12]}) than the one evaluated now (id {query_set_id[:12]}); its test split "
            "may hold training photos. Retrain on this query set (another --work, or delete the run folder)"
        )
    if finished and not meta.get("finished"):
        raise CheckpointError(
            f"{p}: its training run stopped after epoch {(meta.get('metrics') or {}).get('epoch', '?')} of "
            f"{meta.get('epochs_planned', '?')}; finish it with `crosslocate train --resume` (same flags) first"
        )
    if run_id is not None and meta.get("run_id") != run_id:
        raise CheckpointError(
            f"{p}: written by another training run (run {meta.get('run_id')!r}) than the folder's checkpoint.pt "
            f"(run {run_id!r}); delete the stale file or retrain"
        )


__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "check_run_record",
    "load_checkpoint",
    "load_network",
    "read_checkpoint",
    "save_checkpoint",
]
