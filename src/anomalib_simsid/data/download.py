"""Fetching a public dataset archive with integrity checks, materialised atomically.

Nothing half-written may look like a dataset: the archive is downloaded and extracted inside a
temporary folder next to the destination, checked (size and sha256), and the dataset folder only
appears through one ``os.replace`` at the very end. Any failure leaves the destination untouched.

anomalib's ``download_and_extract`` is not used: it accepts only http(s) URLs (no ``file://``
mirror), reuses an archive already present without checking it, has no size check or timeout, and
extracts in place. Its progress bar is used; the sha256 is computed while streaming, so the 1.2 GB
archive is read once (anomalib's ``check_hash`` would read it again).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from anomalib.data.utils.download import DownloadProgressBar
from lightning.pytorch.utilities import rank_zero_info

# Kermany, Zhang, Goldbaum (2018), "Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images
# for Classification", Mendeley Data v2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0. The chest X-ray part
# is the file ChestXRay2017.zip (chest_xray/{train,test}/{NORMAL,PNEUMONIA}: 1,349 + 3,883 train,
# 234 + 390 test); the URL below is Mendeley's public-files link to it, which redirects to storage.
ZHANGLAB_URL = (
    "https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
    "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded"
)
ZHANGLAB_ARCHIVE = "ChestXRay2017.zip"
# Size in bytes as published by a third-party download script; not verified by this project.
ZHANGLAB_SIZE = 1_235_512_464
# UNKNOWN: the archive's sha256 could not be obtained offline. Callers must pass it (the Mendeley
# public API, https://data.mendeley.com/public-api/datasets/rscbjbr9sj/files?folder_id=root&version=2,
# lists it as ``content_details.sha256_hash``; or hash a trusted copy with ``sha256sum``).
ZHANGLAB_SHA256 = ""

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed or did not match its expected size or checksum."""


def fetch(url: str, destination: Path, sha256: str, size: int = 0, timeout: float = 60.0) -> None:
    """Stream ``url`` into ``destination`` and check its size (if ``size`` > 0) and sha256."""
    digest = hashlib.sha256()
    written = 0
    request = urllib.request.Request(url, headers={"User-Agent": "anomalib-simsid"})
    try:
        with (
            urllib.request.urlopen(request, timeout=timeout) as response,
            destination.open("wb") as out,
            DownloadProgressBar(
                unit="B", unit_scale=True, total=int(response.headers.get("Content-Length") or 0) or None
            ) as progress,
        ):
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                written += len(chunk)
                progress.update(len(chunk))
    except OSError as err:
        destination.unlink(missing_ok=True)
        msg = f"downloading {url} failed: {err}"
        raise DownloadError(msg) from err
    if size > 0 and written != size:
        destination.unlink(missing_ok=True)
        msg = f"downloaded {written} bytes from {url}, expected {size}; the archive is incomplete or changed"
        raise DownloadError(msg)
    if digest.hexdigest().lower() != sha256.strip().lower():
        destination.unlink(missing_ok=True)
        msg = (
            f"sha256 of {url} is {digest.hexdigest()}, expected {sha256.strip().lower()}; refusing to use it"
        )
        raise DownloadError(msg)


def safe_extract(archive: Path, destination: Path) -> None:
    """Extract a zip, refusing entries that escape ``destination`` and skipping macOS metadata."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                parts = PurePosixPath(info.filename).parts
                if not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
                    continue
                if info.filename.startswith("/") or ".." in parts:
                    msg = f"{archive}: entry {info.filename!r} would be written outside the extraction folder"
                    raise DownloadError(msg)
                zipped.extract(info, destination)
    except zipfile.BadZipFile as err:
        msg = f"{archive} is not a valid zip archive: {err}"
        raise DownloadError(msg) from err


def download_dataset(
    target: Path,
    url: str,
    sha256: str,
    size: int,
    find_root: Callable[[Path], Path | None],
    archive_name: str = "archive.zip",
) -> Path:
    """Download, verify and extract an archive, then rename the dataset folder to ``target``.

    ``find_root`` locates the dataset folder inside the extracted tree (or returns ``None``).
    """
    if not sha256.strip():
        msg = (
            f"refusing to download {url} without an expected sha256: pass download_sha256=<hex digest> "
            "(see anomalib_simsid.data.download for where to find it)"
        )
        raise ValueError(msg)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-download-", dir=target.parent))
    try:
        archive = staging / archive_name
        rank_zero_info(f"downloading {url} to {archive}")
        fetch(url, archive, sha256=sha256, size=size)
        extracted = staging / "extracted"
        safe_extract(archive, extracted)
        archive.unlink()
        found = find_root(extracted)
        if found is None:
            msg = f"the archive from {url} does not contain the expected dataset layout"
            raise DownloadError(msg)
        os.replace(found, target)  # atomic on one filesystem: the dataset appears complete or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    rank_zero_info(f"dataset ready at {target}")
    return target
