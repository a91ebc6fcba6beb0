"""SimSID: space-aware memory and in-painting for unsupervised anomaly detection in radiographs.

Paper: Xiang et al., "Exploiting Structural Consistency of Chest Anatomy for Unsupervised Anomaly
Detection in Radiography Images", IEEE TPAMI 2024 (https://arxiv.org/abs/2403.08689); successor of
SQUID (CVPR 2023, https://arxiv.org/abs/2111.13495).

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_simsid import DigitAnatomy, SimSID
    >>> model = SimSID(img_size=96, num_patch=3, level=3, base_width=16)
    >>> Engine(max_epochs=10, devices=1).train(model, datamodule=DigitAnatomy())  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import AUROC, Evaluator, F1Score
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn, optim

from .adapters.checkpoint import check_options, check_structure
from .adapters.export import SimSIDExport
from .adapters.post_processing import SimSIDPostProcessor
from .adapters.pre_processing import check_pre_processor_size, simsid_pre_processor
from .adapters.predictions import PredictionsCSV
from .adapters.timer import SimSIDTimer
from .adapters.visualizer import SimSIDVisualizer
from .config import SimSIDConfig
from .loss import DiscriminatorLoss, GeneratorLoss
from .torch_model import SimSIDModel
from .training.calibration import fit_calibration
from .training.distributed import (
    broadcast_buffers,
    refuse_deterministic_cuda,
    require_unused_parameter_detection,
)
from .training.resume import (
    RNG_STATE_KEY,
    RUN_DIR_KEY,
    gather_rng_states,
    rank_rng_states,
    restore_rng_states,
)


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 / AMX), not by emulation.

    Returns:
        ``True`` with AVX512-BF16 or AMX.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _warn_without_augmentation(datamodule: Any) -> None:
    """Warn once per fit when a datamodule not of this package has no training augmentation."""
    from anomalib_simsid.data.base import SplitDataModule

    if datamodule is None or isinstance(datamodule, SplitDataModule):
        return
    if getattr(datamodule, "train_augmentations", None) is None:
        rank_zero_warn(
            f"SimSID: {type(datamodule).__name__} trains without augmentation; the package's datamodules "
            "train with SimSID's (a shift and zoom of up to 5 %, as the paper). To match them, pass "
            "train_augmentations=anomalib_simsid.data.augmentation.simsid_train_augmentation()."
        )


class SimSID(SimSIDExport, AnomalibModule):
    """SimSID as an anomalib model; defaults build the paper model (46.1 M + 1.09 M parameters).

    The architecture arguments are gathered once into a frozen :class:`~.config.SimSIDConfig`, which
    builds :class:`~.torch_model.SimSIDModel`; each stays a flat argument here so that
    ``--model.init_args.<name>`` works on the CLI and checkpoints keep their hyper-parameter names.

    Args:
        img_size: side of the square input the network sees; every network size derives from it. It
            stays a model argument because the architecture (memory slot sizes, critic depth) and
            the checkpoint's and export's metadata depend on it; the default pre-processor resizes
            to it, and a user-given pre-processor must resize to it too (checked, clear error).
        num_patch: patches per image side (one bottleneck memory per grid position).
        level: stride-2 encoder stages per patch (at least 2: the decoder's two skip levels).
        base_width: channels of the first stage; doubled at every stage.
        memory: bottleneck memory kind: ``"matrix"`` (learned, SimSID) or ``"queue"`` (SQUID's FIFO;
            the released ZhangLab config).
        num_slots: slots of every memory.
        topk: shrinkage rank of the memory read (strict: ``topk - 1`` slots stay non-zero).
        inpaint_mask_ratio: training probability of taking the in-painted bottleneck feature
            (1.0 = always; CheXpert used 0.9).
        disc_eval_norm: critic BatchNorm at inference, ``"per_sample"`` (faithful, batch-independent)
            or ``"running"``.
        recon_weight: loss weight λ_s of the student's reconstruction.
        teacher_weight: loss weight λ_t of the teacher's reconstruction.
        dist_weight: loss weight λ_dist of the student-teacher feature distillation.
        adv_weight: loss weight λ_gen of the generator's adversarial term.
        disc_weight: loss weight λ_d of the critic.
        lr: Adam learning rate of the generator.
        disc_lr: Adam learning rate of the critic.
        weight_decay: generator weight decay (the critic has none).
        n_critic: generator step every ``n_critic`` batches; the critic steps on every batch.
        cosine_period: ``T_max`` (epochs) of the generator's cosine schedule, stepped per epoch and
            never clamped (it rises again after ``T_max``, as released).
        eta_min: floor of the cosine schedule.
        disc_cosine: anneal the critic's rate on the same cosine (released: constant). Short
            schedules such as the DigitAnatomy demo use it so the adversarial game settles.
        max_epochs: if set, forced on the trainer (for ``anomalib benchmark``, which cannot set it).
        channels_last: store the convolution weights NHWC, a speed lever (same math, other memory
            layout; see ``benchmarks/results/train_speed.md``). Mixed precision is the trainer's:
            ``--trainer.precision bf16-mixed``.
        score: ``pred_score``: ``"critic"`` (paper) or ``"calibrated_residual"`` (the mean residual
            relative to the one expected at the image's sharpness, a line fitted on the training
            normals after every epoch and stored in checkpoints and exports; the robust configs).
        pre_processor: ``True`` for SimSID's resize and scaling, or a user's (same size).
        post_processor: ``True`` for :class:`~.adapters.post_processing.SimSIDPostProcessor`.
        evaluator: ``True`` for image AUROC (validation) and AUROC and F1 (test).
        visualizer: ``True`` for :class:`~.adapters.visualizer.SimSIDVisualizer`.
    """

    def __init__(
        self,
        img_size: int = 128,
        num_patch: int = 2,
        level: int = 4,
        base_width: int = 32,
        memory: str = "matrix",
        num_slots: int = 200,
        topk: int = 5,
        inpaint_mask_ratio: float = 1.0,
        disc_eval_norm: str = "per_sample",
        recon_weight: float = 10.0,
        teacher_weight: float = 0.01,
        dist_weight: float = 0.001,
        adv_weight: float = 0.005,
        disc_weight: float = 0.005,
        lr: float = 1e-4,
        disc_lr: float = 1e-4,
        weight_decay: float = 1e-5,
        n_critic: int = 2,
        cosine_period: int = 300,
        eta_min: float = 1e-5,
        disc_cosine: bool = False,
        max_epochs: int | None = None,
        channels_last: bool = False,
        score: str = "critic",
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        config = SimSIDConfig(
            img_size=img_size,
            num_patch=num_patch,
            level=level,
            base_width=base_width,
            memory=memory,
            num_slots=num_slots,
            topk=topk,
            inpaint_mask_ratio=inpaint_mask_ratio,
            disc_eval_norm=disc_eval_norm,
            score=score,
        )
        if pre_processor is True:
            pre_processor = self.configure_pre_processor((img_size, img_size))
        elif isinstance(pre_processor, PreProcessor):
            check_pre_processor_size(pre_processor, img_size)
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.model = SimSIDModel(config)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.generator_loss = GeneratorLoss(recon_weight, teacher_weight, dist_weight, adv_weight)
        self.discriminator_loss = DiscriminatorLoss(disc_weight)
        self.automatic_optimization = False

    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """SimSID's antialiased bicubic resize and [-1, 1] scaling (see :mod:`.adapters.pre_processing`).

        Args:
            image_size: the square side to resize to (default 128, the paper's).

        Returns:
            An anomalib pre-processor that exports with the model.
        """
        return simsid_pre_processor(image_size or (128, 128))

    def configure_post_processor(self) -> PostProcessor:
        """Anomalib's one-class post-processor, normalising without ties (:mod:`.adapters.post_processing`).

        Threshold matching is off: without masks it would reuse the image threshold (a critic logit)
        on the residual map, which has other units, and saturate every exported heatmap at 0 or 1.

        Returns:
            :class:`~.adapters.post_processing.SimSIDPostProcessor`.
        """
        return SimSIDPostProcessor(enable_threshold_matching=False)

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Image AUROC at validation (checkpoints are chosen on it); at test also F1 and the shortcut audit.

        The audit: AUROC on sharpness- and intensity-matched pairs, and each statistic alone. Chest X-ray
        test sets confound disease with acquisition (on ZhangLab, sharpness alone scores 85.1 AUROC), so
        a test AUROC without them misleads; they read each test image once more and change no score
        (:mod:`anomalib_simsid.audit.metrics`).

        Returns:
            anomalib's evaluator with those metrics.
        """
        from anomalib_simsid.audit.metrics import audit_metrics

        return Evaluator(
            val_metrics=[AUROC(fields=["pred_score", "gt_label"], prefix="image_")],
            test_metrics=[
                AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
                F1Score(fields=["pred_label", "gt_label"], prefix="image_"),
                *audit_metrics(),
            ],
        )

    @classmethod
    def configure_visualizer(cls) -> SimSIDVisualizer:
        """Draw overlays from the package's reader: DICOM windowed, 16-bit not white (:mod:`.adapters`).

        Returns:
            :class:`~.adapters.visualizer.SimSIDVisualizer`.
        """
        return SimSIDVisualizer()

    def configure_callbacks(self) -> list[Callback]:
        """Return anomalib's components, the ``predictions.csv`` writer and a timer naming its figures.

        :class:`.adapters.timer.SimSIDTimer` replaces anomalib's ``TimerCallback`` (Lightning swaps a trainer
        callback for a model callback of a subclass), so only SimSID runs change.

        Returns:
            The callbacks Lightning adds to the trainer's.
        """
        return [*super().configure_callbacks(), PredictionsCSV(), SimSIDTimer()]

    def configure_optimizers(self) -> tuple[list[optim.Optimizer], list[dict[str, Any]]]:
        """Critic and generator Adam, betas (0.5, 0.999); cosine on the generator (and critic if asked).

        Returns:
            ``[critic, generator]`` optimisers and their epoch-wise schedules.
        """
        hp = self.hparams
        d_opt = optim.Adam(self.model.discriminator.parameters(), lr=hp.disc_lr, betas=(0.5, 0.999), eps=1e-8)
        g_opt = optim.Adam(
            self.model.generator.parameters(),
            lr=hp.lr,
            betas=(0.5, 0.999),
            eps=1e-7,
            weight_decay=hp.weight_decay,
        )
        annealed = [g_opt, d_opt] if hp.disc_cosine else [g_opt]
        cosine = optim.lr_scheduler.CosineAnnealingLR
        schedules = [
            {"scheduler": cosine(opt, T_max=hp.cosine_period, eta_min=hp.eta_min), "interval": "epoch"}
            for opt in annealed
        ]
        return [d_opt, g_opt], schedules

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        """Critic step on every batch; generator step and queue write every ``n_critic`` batches.

        One generator pass serves both steps, as released. The adversarial term reads the critic
        after its update, hence the second critic call on the generator step. Critic-only batches run
        the generator without autograd graph and teacher: their only use is the detached fake image.

        Args:
            batch: a training batch of normal images.
            batch_idx: position in the epoch (decides the generator step).
        """
        d_opt, g_opt = self.optimizers()
        generator_step = batch_idx % self.hparams.n_critic == 0
        output = self.model(batch.image, full_pass=generator_step)

        d_loss = self.discriminator_loss(output)
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        d_opt.step()
        logs = {"train_d_loss": d_loss.detach()}

        if generator_step:
            reconstruction = output.generated.reconstruction
            g_loss, terms = self.generator_loss(output, self.model.discriminator(reconstruction))
            g_opt.zero_grad()
            self.manual_backward(g_loss)
            g_opt.step()
            self.model.write_memory(self._gather_queries(output.generated.queries.detach()))
            logs["train_g_loss"] = g_loss.detach()
            logs.update({f"train_{name}_loss": value.detach() for name, value in terms.items()})
        # Epoch means over all ranks: sync_dist reduces once at the epoch's end, never inside the step.
        self.log_dict(
            logs,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=output.image.shape[0],
            sync_dist=True,
        )

    def _gather_queries(self, queries: torch.Tensor) -> torch.Tensor:
        """Under data parallelism every rank writes all ranks' queries, so the queues stay identical."""
        if self.trainer is None or self.trainer.world_size == 1:
            return queries
        return self.all_gather(queries).flatten(0, 1)

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        """After the epoch's last batch, refit the sharpness calibration (:mod:`.training.calibration`).

        Here, not in ``on_train_epoch_end``: Lightning validates (and checkpoints) before that hook.
        """
        del outputs, batch
        if self.trainer.is_last_batch or batch_idx + 1 >= self.trainer.num_training_batches:
            fit_calibration(self)

    def on_train_epoch_end(self) -> None:
        """Step the cosine schedules once per epoch (manual optimisation does not)."""
        schedules = self.lr_schedulers()
        for schedule in schedules if isinstance(schedules, list) else [schedules]:
            schedule.step()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also save the RNG states and the run folder, for a resume that continues the same run.

        The RNG states make it draw the same shuffles, augmentations and masks; the folder lets it
        write where the run it resumes wrote.
        """
        super().on_save_checkpoint(checkpoint)
        checkpoint[RNG_STATE_KEY] = gather_rng_states()  # every rank's, so each resumes its own
        checkpoint[RUN_DIR_KEY] = str(self.trainer.default_root_dir)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a foreign checkpoint; when fitting resumes, restore the RNG states.

        Lightning calls this hook before it loads the state dict, so a PaDiM or PatchCore checkpoint
        given to ``anomalib test/export --model SimSID --ckpt_path`` ends in one short
        :class:`~anomalib_simsid.models.simsid.adapters.checkpoint.NotSimSIDError` instead of hundreds of
        missing keys.
        """
        hparams = check_structure(checkpoint)
        check_options(hparams, set(inspect.signature(type(self).__init__).parameters))
        super().on_load_checkpoint(checkpoint)
        if RNG_STATE_KEY in checkpoint and self._trainer is not None and self._trainer.state.fn == "fit":
            restore_rng_states(rank_rng_states(checkpoint[RNG_STATE_KEY], self._trainer.global_rank))

    def setup(self, stage: str) -> None:
        """Refuse, before the first step, what cannot train (:mod:`.training.distributed`).

        A DDP strategy that cannot handle the two manual backwards, and ``deterministic=True`` on CUDA.

        Args:
            stage: Lightning's stage (``"fit"``, ``"validate"``, ...).
        """
        if stage == "fit":
            require_unused_parameter_detection(self.trainer.strategy)
            refuse_deterministic_cuda(self.trainer.strategy.root_device)

    def on_validation_epoch_start(self) -> None:
        """Validate every rank with rank 0's BatchNorm statistics (DDP leaves them rank-local)."""
        broadcast_buffers(self.model)

    def on_train_end(self) -> None:
        """End training with identical buffers on every rank."""
        broadcast_buffers(self.model)

    def on_fit_start(self) -> None:
        """Autotune cuDNN on CUDA; warn when bf16 mixed precision runs on a CPU without native bf16.

        Every batch has the same image size, so cuDNN's autotuner picks the fastest convolution
        kernels once (unless ``deterministic`` asks for reproducible kernels); the setting before the
        fit returns at its end, so other models in the process are not affected.

        There oneDNN emulates bf16 matrix products and they run hundreds of times slower than fp32
        (measured 0.27 against 90 GFLOP/s on a 2-core AVX2 EPYC), so ``bf16-mixed`` is a speed lever
        only on CPUs with AVX512-BF16 / AMX, and on GPUs. Also warn when another datamodule (anomalib's
        ``Folder``) trains without augmentation: the package's datamodules apply SimSID's by default,
        a foreign one is left as the user made it.
        """
        _warn_without_augmentation(getattr(self.trainer, "datamodule", None))
        self._cudnn_benchmark = torch.backends.cudnn.benchmark
        if self.device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
            torch.backends.cudnn.benchmark = True
        precision = str(getattr(self.trainer, "precision", ""))
        if precision.startswith("bf16") and self.device.type == "cpu" and not cpu_has_fast_bf16():
            rank_zero_warn(
                f"SimSID: precision {precision} on a CPU without native bf16 support "
                f"({torch.backends.cpu.get_cpu_capability()}): bf16 matrix products are emulated and "
                "far slower than fp32 here. Train with --trainer.precision 32-true on this machine."
            )

    def on_fit_end(self) -> None:
        """Restore cuDNN autotuning; warn when the fitted score ranks validation images backwards."""
        torch.backends.cudnn.benchmark = getattr(self, "_cudnn_benchmark", torch.backends.cudnn.benchmark)
        auroc = self.trainer.callback_metrics.get("image_AUROC")
        if auroc is not None and float(auroc) < 0.5:
            shown = math.floor(float(auroc) * 1000) / 1000  # 0.4996 is shown as 0.499, not "0.500, below 0.5"
            rank_zero_warn(
                f"SimSID: validation image_AUROC after fitting is {shown:.3f}, below 0.5: the score "
                "ranks normal images as more anomalous than abnormal ones. The model is undertrained "
                "(train longer) or the data breaks SimSID's assumption "
                "that anomalies change the anatomy it learned. Do not deploy its threshold."
            )

    def validation_step(self, batch: Batch, *args, **kwargs) -> Batch:
        """Score the batch; anomalib's post-processor and evaluator read the returned batch.

        Args:
            batch: a validation batch.
            *args: Lightning's batch and dataloader indices (unused).
            **kwargs: unused.

        Returns:
            The batch with ``pred_score`` and ``anomaly_map``.
        """
        del args, kwargs
        return batch.update(**self.model(batch.image)._asdict())

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No gradient clipping (manual optimisation), no sanity check; ``max_epochs`` only if asked.

        Returns:
            Keyword arguments anomalib's ``Engine`` passes to the trainer.
        """
        args: dict[str, Any] = {"gradient_clip_val": 0, "num_sanity_val_steps": 0}
        if self.hparams.max_epochs is not None:
            args["max_epochs"] = self.hparams.max_epochs
        return args

    @property
    def learning_type(self) -> LearningType:
        """Trained on normal images only.

        Returns:
            ``LearningType.ONE_CLASS``.
        """
        return LearningType.ONE_CLASS
