"""The sequence model behind ``perturbscore predict``: Enformer through enformer-pytorch.

A :class:`Predictor` maps one-hot batches ``(b, L, 4)`` to ``(b, B, T)`` predictions of
all bins and tracks of one output head; :func:`predict_batch` adds reverse-complement
averaging and keeps only the bins and tracks that scoring needs.  The engine only relies
on that interface, so tests can also drive it with a probe model whose outputs are known.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import PerturbscoreError
from .extras import require
from .geometry import ENFORMER, Geometry, centre_bins

log = logging.getLogger("perturbscore")

PRECISIONS = ("float32", "float16", "bfloat16")


class Predictor(Protocol):
    """What the engine needs from a model."""

    geometry: Geometry
    n_tracks: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(b, L, 4)`` float32 one-hot -> ``(b, B, T)`` float32 predictions."""
        ...

    def describe(self) -> dict[str, Any]:
        """What to record in the manifest (model, device, precision)."""
        ...


@dataclass
class EnformerPredictor:
    """An enformer-pytorch model in eval mode on one device.

    Use :func:`load_enformer` to build one.
    """

    model: Any
    head: str
    geometry: Geometry
    n_tracks: int
    device: str
    precision: str
    source: str

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        dtype = getattr(torch, self.precision)
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, dtype=dtype)
            out = self.model(t, head=self.head)
            return out.float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.source,
            "head": self.head,
            "device": self.device,
            "precision": self.precision,
            "config": json.loads(self.model.config.to_json_string()),
        }


def load_enformer(
    source: str,
    head: str = "human",
    device: str = "cpu",
    precision: str = "float32",
    input_length: int | None = None,
    centre_bin: int | None = None,
) -> EnformerPredictor:
    """Load Enformer the way users do: ``enformer_pytorch.from_pretrained(path or hub id)``.

    Parameters
    ----------
    source : str
        A folder written by ``save_pretrained`` or a hub id such as
        ``EleutherAI/enformer-official-rough`` (needs network access or a local cache).
    head : str
        Output head (``human``: 5,313 tracks, ``mouse``: 1,643).
    device : str
        ``cpu``, ``cuda`` or ``cuda:N``.
    precision : str
        Model precision: ``float32``, ``float16`` (CUDA only) or ``bfloat16``.
    input_length : int, optional
        Bases the model reads; default the config's ``sequence_length`` or 196,608.
    centre_bin : int, optional
        The 447/448 convention (see :func:`geometry_from_config`); default ``bins // 2``.

    Raises
    ------
    PerturbscoreError
        Missing extra, unknown device or precision, a model that cannot be loaded, or a
        head the model does not have.
    """
    torch = require("torch", "perturbscore predict")
    enformer_pytorch = require("enformer_pytorch", "perturbscore predict")
    if precision not in PRECISIONS:
        raise PerturbscoreError(
            f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}."
        )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PerturbscoreError(
            f"--device {device} was asked for but torch sees no CUDA device; use --device cpu."
        )
    if not (device == "cpu" or device.startswith("cuda")):
        raise PerturbscoreError(f"unknown device {device!r}; use cpu, cuda or cuda:N.")
    if precision == "float16" and device == "cpu":
        raise PerturbscoreError(
            "--precision float16 needs --device cuda; on CPU use float32 or bfloat16."
        )
    local = Path(source).expanduser()
    if not local.exists() and source.startswith(("/", "./", "../", "~")):
        raise PerturbscoreError(f"{source}: model folder not found. Check the path.")
    if local.exists() and not (local / "config.json").is_file():
        raise PerturbscoreError(
            f"{local}: not a saved model folder (no config.json); give the folder written "
            "by save_pretrained or a hub id."
        )
    try:
        model = enformer_pytorch.from_pretrained(str(local) if local.exists() else source)
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PerturbscoreError(
            f"cannot load the model {source!r} ({first}); give a folder written by "
            "save_pretrained or a hub id available offline."
        ) from exc
    heads = dict(model.config.output_heads)
    if head not in heads:
        raise PerturbscoreError(
            f"model {source!r} has no output head {head!r}; its heads are "
            f"{', '.join(heads)}."
        )
    geometry = geometry_from_config(model.config, input_length, centre_bin)
    model = model.to(device=device, dtype=getattr(torch, precision)).eval()
    return EnformerPredictor(model, head, geometry, int(heads[head]), device, precision, source)


def geometry_from_config(config: Any, input_length: int | None = None,
                         centre_bin: int | None = None) -> Geometry:
    """Geometry of an enformer-pytorch model from its config (``EnformerConfig``).

    The model reads ``input`` bases (``input_length``, else the config's
    ``sequence_length``, else Enformer's 196,608) and predicts ``target_length`` bins of
    ``2 ** num_downsamples`` bp.  Its window is twice its input, as for the released
    Enformer (393,216 bp cropped to the central 196,608), so window starts and offsets are
    the study's (``enformer_start``, ``variant_pos_in_window``); Enformer's own config
    gives exactly :data:`perturbscore.geometry.ENFORMER`.
    """
    bin_size = 2 ** int(getattr(config, "num_downsamples", 7))
    length = int(input_length or getattr(config, "sequence_length", None) or ENFORMER.input)
    target = int(getattr(config, "target_length", ENFORMER.bins))
    if length <= 0 or length % bin_size:
        raise PerturbscoreError(
            f"input length {length} must be a positive multiple of the model's bin size "
            f"{bin_size}; choose another --input-length."
        )
    bins = length // bin_size if target == -1 else target
    if bins > length // bin_size:
        raise PerturbscoreError(
            f"input length {length} gives {length // bin_size} bins, fewer than the "
            f"model's target_length {target}; choose a longer --input-length."
        )
    dims = (2 * length, length, bins, bin_size)
    if dims == (ENFORMER.window, ENFORMER.input, ENFORMER.bins, ENFORMER.bin_size):
        geo = ENFORMER
    else:
        geo = Geometry("custom", *dims, centre_bin=bins // 2,
                       source="enformer-pytorch config; window = 2 x input, as Enformer's")
    return recentre(geo, centre_bin)


def recentre(geo: Geometry, centre_bin: int | None) -> Geometry:
    """``geo`` under the 447/448 convention ``centre_bin`` (``--center-bin``); None keeps it."""
    if centre_bin is None or centre_bin == geo.centre_bin:
        return geo
    if centre_bin not in centre_bins(geo.bins):
        raise PerturbscoreError(
            f"--center-bin {centre_bin}: the window centre of {geo.bins} bins is bin "
            f"{' or '.join(map(str, centre_bins(geo.bins)))} (the 447/448 convention of "
            "perturbscore.geometry); choose one of them."
        )
    return geo.with_centre_bin(centre_bin)


def plan_geometry(model: str | None = None, input_length: int | None = None,
                  centre_bin: int | None = None) -> Geometry:
    """Geometry for ``--plan-only``: from a saved model's ``config.json``, else Enformer's.

    Reads the JSON only, so planning needs neither torch nor the weights.  A model that
    is not a local folder (a hub id such as ``EleutherAI/enformer-official-rough``) is
    planned with Enformer's published geometry: planning never downloads anything.
    """
    from types import SimpleNamespace

    if model is None or not Path(model).exists():
        if model is not None:
            log.info("--plan-only: %s is not a local folder; planning with Enformer's geometry",
                     model)
        return geometry_from_config(SimpleNamespace(), input_length, centre_bin)
    config = Path(model) / "config.json"
    if not config.is_file():
        raise PerturbscoreError(
            f"{config} not found: the model {model} is a folder but not one written by "
            "save_pretrained; name the saved model's folder, or a hub id for Enformer."
        )
    return geometry_from_config(SimpleNamespace(**json.loads(config.read_text())),
                                input_length, centre_bin)


def predict_batch(
    predictor: Predictor,
    x: np.ndarray,
    bins: np.ndarray,
    tracks: np.ndarray,
    reverse_complement: bool,
) -> np.ndarray:
    """Predict a batch and keep the chosen bins and tracks.

    Parameters
    ----------
    x : ndarray
        ``(b, L, 4)`` one-hot, columns A C G T.
    bins, tracks : ndarray
        Output bins and tracks to keep, in order.
    reverse_complement : bool
        Also predict the reverse complement (positions reversed, A<->T, C<->G), flip its
        bins back (bin ``i`` <-> ``B - 1 - i``) and average with the forward prediction.

    Returns
    -------
    ndarray
        ``(b, len(bins), len(tracks))`` float32.  # b K T
    """
    if reverse_complement:
        rc = x[:, ::-1, ::-1]  # reverse the positions; reversing A C G T complements
        both = predictor(np.concatenate([x, rc]))
        fwd, back = both[: len(x)], both[len(x):, ::-1]
        y = (fwd.astype(np.float32) + back.astype(np.float32)) / np.float32(2)
    else:
        y = predictor(x)
    return np.ascontiguousarray(y[:, bins][:, :, tracks], dtype=np.float32)
