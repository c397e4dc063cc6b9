"""A picture of what the discriminator sees: teacher and (adapted) student features projected to 2-D."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from typing_extensions import override

from lightning_advkd.teacher_student import TeacherStudentModule

log = logging.getLogger(__name__)


def pca_projection(reference: Tensor, *others: Tensor, dims: int = 2) -> tuple[Tensor, ...]:
    """Project ``reference`` and ``others`` onto the top principal axes of ``reference`` (centred on its mean).

    Example:
        >>> torch.manual_seed(0) and None
        >>> points = torch.randn(100, 5) * torch.tensor([10.0, 1.0, 1.0, 1.0, 1.0])
        >>> projected, = pca_projection(points)
        >>> projected.shape, bool(projected[:, 0].var() > projected[:, 1].var())
        (torch.Size([100, 2]), True)
    """
    reference = reference.double()
    mean = reference.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(reference - mean, full_matrices=False)
    axes = vh[:dims].T
    return tuple(((x.double() - mean) @ axes).float() for x in (reference, *others))


class FeatureProjectionPlot(Callback):
    """Every ``every_n_epochs`` validation epochs, a PNG of teacher vs adapted-student features on a fixed batch.

    Takes the first ``num_samples`` samples of the validation loader once, then after each chosen validation epoch
    computes the module's :meth:`~lightning_advkd.TeacherStudentModule.features`: for ``AdversarialDistillation`` the
    vectors the discriminator compares (the teacher's feature ``f_T`` and the adapted student feature ``A(f_S)``, or
    both tempered softmaxes with ``discriminator_input="logits"``), for the other teacher-student modules the teacher's
    feature and the student's through their adapter. It projects both onto the first two principal axes of the
    teacher's vectors and draws them coloured by network. The PNG is saved under ``dirpath`` and handed to every
    logger that takes images (W&B's ``log_image``, TensorBoard's ``add_image``). Modules other than the
    teacher-student ones (the supervised baseline) are skipped, as are feature widths that no adapter reconciles (a
    projection on the teacher's axes would be meaningless).

    Args:
        dirpath: Folder of the PNGs (``feature_projection_epoch<NNN>.png``).
        every_n_epochs: Plot after every n-th validation epoch.
        num_samples: Samples of the fixed validation batch.
        key: Name of the image in the loggers.

    Raises:
        ValueError: On ``every_n_epochs`` or ``num_samples`` below 1.
    """

    def __init__(
        self,
        dirpath: str | Path,
        every_n_epochs: int = 1,
        num_samples: int = 512,
        key: str = "val/feature_projection",
    ) -> None:
        if every_n_epochs < 1 or num_samples < 1:
            raise ValueError(f"every_n_epochs and num_samples must be >= 1, got {every_n_epochs}, {num_samples}")
        self.dirpath = Path(dirpath)
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.key = key
        self._batch: Any = None
        self._skip_reason_logged = False
        self.saved: list[Path] = []

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not isinstance(pl_module, TeacherStudentModule):
            return
        fast_dev_run = trainer.fast_dev_run  # type: ignore[attr-defined]  # set by Lightning's _init_debugging_flags
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0 and not fast_dev_run:
            return
        features = self._features(trainer, pl_module)
        if features is None:
            return
        path = self._plot(*features, epoch=trainer.current_epoch)
        self.saved.append(path)
        self._log_image(trainer, path)

    def _fixed_batch(self, trainer: L.Trainer) -> Any:
        if self._batch is None:
            loaders = trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            if loader is None:
                return None
            self._batch = _take(loader, self.num_samples)
        return self._batch

    def _features(self, trainer: L.Trainer, module: TeacherStudentModule) -> tuple[Tensor, Tensor] | None:
        batch = self._fixed_batch(trainer)
        if batch is None:
            return None
        batch = _to_device(batch, module.device)
        teacher_features, adapted = module.features(batch)
        if adapted.shape[1] != teacher_features.shape[1]:
            if not self._skip_reason_logged:
                log.info(
                    "feature projection skipped: student features (%d) and teacher features (%d) differ in width and "
                    "the method has no adapter",
                    adapted.shape[1],
                    teacher_features.shape[1],
                )
                self._skip_reason_logged = True
            return None
        return teacher_features.float().cpu(), adapted.float().cpu()

    def _plot(self, teacher: Tensor, student: Tensor, epoch: int) -> Path:
        # A bare Figure renders through Agg when saved: no pyplot, so the process's matplotlib backend is left alone.
        from matplotlib.figure import Figure

        teacher_2d, student_2d = pca_projection(teacher, student)
        fig = Figure(figsize=(5, 5), dpi=100)
        ax = fig.subplots()
        ax.scatter(teacher_2d[:, 0], teacher_2d[:, 1], s=6, alpha=0.5, label="teacher", color="tab:red")
        ax.scatter(student_2d[:, 0], student_2d[:, 1], s=6, alpha=0.5, label="student", color="tab:blue")
        ax.set_xlabel("PC 1 of the teacher's vectors")
        ax.set_ylabel("PC 2 of the teacher's vectors")
        ax.set_title(f"what the discriminator sees, epoch {epoch}")
        ax.legend(loc="best", markerscale=3)
        fig.tight_layout()
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"feature_projection_epoch{epoch:03d}.png"
        fig.savefig(path)
        return path

    def _log_image(self, trainer: L.Trainer, path: Path) -> None:
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key=self.key, images=[str(path)], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                import numpy as np
                from PIL import Image

                image = np.asarray(Image.open(path).convert("RGB"))
                logger.experiment.add_image(self.key, image, global_step=trainer.global_step, dataformats="HWC")

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"saved": [str(p) for p in self.saved]}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.saved = [Path(p) for p in state_dict.get("saved", [])]


def _take(loader: Any, num_samples: int) -> Any:
    """The first ``num_samples`` samples of a loader, as one batch of the loader's own layout."""
    parts = []
    count = 0
    for batch in loader:
        parts.append(batch)
        count += len(_first(batch))
        if count >= num_samples:
            break
    if not parts:
        return None
    return _cut(_concat(parts), num_samples)


def _first(batch: Any) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, dict):
        return next(v for v in batch.values() if isinstance(v, Tensor))
    return batch[0]


def _concat(parts: list[Any]) -> Any:
    head = parts[0]
    if isinstance(head, Tensor):
        return torch.cat(parts)
    if isinstance(head, dict):
        return {
            k: torch.cat([p[k] for p in parts]) if isinstance(v, Tensor) and v.dim() > 0 else v for k, v in head.items()
        }
    return type(head)(torch.cat([p[i] for p in parts]) for i in range(len(head)))


def _cut(batch: Any, n: int) -> Any:
    if isinstance(batch, Tensor):
        return batch[:n]
    if isinstance(batch, dict):
        return {k: v[:n] if isinstance(v, Tensor) and v.dim() > 0 else v for k, v in batch.items()}
    return type(batch)(v[:n] for v in batch)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
    return type(batch)(v.to(device) if isinstance(v, Tensor) else v for v in batch)


__all__ = ["FeatureProjectionPlot", "pca_projection"]
