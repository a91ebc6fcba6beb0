"""SimSID's overlays: anomalib's ``ImageVisualizer`` showing the image as the package reads it.

anomalib 2.7's ``ImageVisualizer`` reopens every test and predict image with
``PIL.Image.open(path).convert("RGB")``: a DICOM raises ``UnidentifiedImageError`` (and ends the whole
``anomalib test``/``predict`` run), and a 16-bit PNG is clipped to white. This visualizer draws the
same panels from :func:`~anomalib_simsid.data.image_io.read_image` instead, which shows what the
model saw (DICOM windowed as a radiologist views it, 16-bit PNG scaled by its bit depth). An image
that cannot be read gets a warning naming it and no overlay; the other images still get theirs.
Overlays of files PIL cannot write under their own name (DICOM, no suffix) get ``.png`` appended.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from anomalib.utils.path import generate_output_filename
from anomalib.visualization import ImageVisualizer
from anomalib.visualization.image.item_visualizer import visualize_image_item
from PIL import Image

from anomalib_simsid.data.image_io import ImageReadError, read_image

logger = logging.getLogger(__name__)


class _Displayed:
    """An item whose ``image`` is the one read here (no ``image_path``, so anomalib does not reopen it)."""

    def __init__(self, item: Any, image: torch.Tensor) -> None:
        self._item = item
        self.image = image
        self.image_path = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._item, name)


def overlay_path(output: Path) -> Path:
    """``output``, with ``.png`` appended when PIL cannot write its suffix (``x.dcm`` -> ``x.dcm.png``).

    Args:
        output: the overlay's intended path.

    Returns:
        A path PIL can write.
    """
    if output.suffix.lower() in Image.registered_extensions():
        return output
    return output.with_name(f"{output.name}.png")


class SimSIDVisualizer(ImageVisualizer):
    """anomalib's image visualizer (same fields, layout and file names) reading through the package reader.

    ``saved`` maps each image path of the current test or predict run to its overlay file (the
    ``overlay`` column of ``predictions.csv``). Without an ``output_dir`` of its own, every run draws
    into its own run folder's ``images/``, also when one model instance is tested or predicted twice.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.saved: dict[str, str] = {}
        self._own_output_dir = self.output_dir is not None

    def _start_run(self, trainer: Any) -> None:
        self.saved = {}
        if not self._own_output_dir:
            self.output_dir = Path(trainer.default_root_dir) / "images"

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        """Draw this run's overlays into its own run folder."""
        del pl_module
        self._start_run(trainer)

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        """Draw this run's overlays into its own run folder."""
        del pl_module
        self._start_run(trainer)

    def visualize(self, predictions: Any) -> Image.Image | list[Image.Image | None] | None:
        """Like anomalib's: one picture for an item or a one-item batch, else a list (None: unreadable).

        Args:
            predictions: an item or a batch.

        Returns:
            One picture, or a list of them.
        """
        from anomalib.data import ImageBatch, ImageItem, NumpyImageBatch, NumpyImageItem

        if isinstance(predictions, ImageItem | NumpyImageItem):
            return self.draw(predictions)
        if isinstance(predictions, ImageBatch | NumpyImageBatch):
            pictures = [self.draw(item) for item in predictions]
            return pictures[0] if len(pictures) == 1 else pictures
        return super().visualize(predictions)  # anomalib's TypeError for anything else

    def on_test_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Save one overlay per readable image under ``<run folder>/images``, as anomalib does."""
        del pl_module, outputs, batch_idx, dataloader_idx
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / "images"
        datamodule = getattr(trainer, "datamodule", None)
        for item in batch:
            picture = self.draw(item)
            if picture is None:
                continue
            filename = generate_output_filename(
                input_path=item.image_path or "",
                output_path=self.output_dir,
                dataset_name=getattr(datamodule, "name", None),
                category=getattr(datamodule, "category", None),
            )
            target = overlay_path(Path(filename))
            picture.save(target)
            self.saved[str(item.image_path)] = str(target)

    def draw(self, item: Any) -> Image.Image | None:
        """Draw the panels of one item; None (and a warning naming the file) if its image cannot be read.

        Args:
            item: one prediction item.

        Returns:
            The picture, or ``None``.
        """
        if item.image_path:
            try:
                item = _Displayed(item, read_image(item.image_path))
            except ImageReadError as err:
                logger.warning("SimSID: no overlay for %s: %s", item.image_path, err)
                return None
        return visualize_image_item(
            item,
            fields=self.fields,
            overlay_fields=self.overlay_fields,
            field_size=self.field_size,
            fields_config=self.fields_config,
            overlay_fields_config=self.overlay_fields_config,
            text_config=self.text_config,
        )
