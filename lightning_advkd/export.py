"""Getting the trained student out of a distillation checkpoint, for use without this package.

:func:`export_student` writes the student in the formats a deployment reads, none of which needs ``lightning_advkd``:

* ``safetensors``: the weights, read by ``safetensors.torch.load_file`` into the architecture (no pickle at all);
* ``state_dict``: the same weights as a plain ``torch.save(state_dict)``, read with ``torch.load(weights_only=True)``;
* ``onnx``: the network through the current exporter (``torch.onnx.export(..., dynamo=True)``), batch dimension
  dynamic, checked against onnxruntime on CPU (largest absolute logit difference recorded, an error past a tolerance);
* ``module``: the whole ``nn.Module`` pickled (``torch.save(model)``), only for architectures defined outside this
  package (torchvision, timm, your own): the attributes this package sets on them (``default_cfg``) become plain data,
  and the file is checked to name no ``lightning_advkd`` class.

TorchScript is not offered: it is deprecated in favour of ``torch.export``/ONNX, and ONNX already gives a file that
runs without Python classes. ``export.json`` beside the files records their SHA-256, the input shape and the parity.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_advkd.models._checkpoint import load_weights, read_checkpoint

__all__ = [
    "DEFAULT_FORMATS",
    "FORMATS",
    "ExportParityError",
    "ExportedStudent",
    "export_student",
    "load_student_state_dict",
]

log = logging.getLogger(__name__)

STUDENT_PREFIX = "student."
#: Every format :func:`export_student` writes, and the file name it gives each (after ``name``).
FORMATS: dict[str, str] = {
    "safetensors": ".safetensors",
    "state_dict": ".pt",
    "onnx": ".onnx",
    "module": ".module.pt",
}
DEFAULT_FORMATS = ("safetensors", "state_dict", "onnx")
_PACKAGE = __name__.split(".")[0]
_INSTALL_HINT = "pip install 'lightning_advkd[export]' (safetensors, onnx, onnxscript, onnxruntime)"


class ExportParityError(RuntimeError):
    """The exported ONNX network's outputs differ from the PyTorch student's by more than the tolerance."""


@dataclasses.dataclass(frozen=True)
class ExportedStudent:
    """What :func:`export_student` wrote.

    Attributes:
        files: Format -> file written.
        manifest: ``export.json``: the files' SHA-256, the input shape, the parity check.
        onnx_max_abs_diff: Largest absolute difference between onnxruntime's and PyTorch's outputs on random inputs
            (``None`` when no ONNX file was written).
    """

    files: dict[str, Path]
    manifest: Path
    onnx_max_abs_diff: float | None


def load_student_state_dict(checkpoint_path: str | Path) -> dict[str, Tensor]:
    """Read the student's weights from an :class:`~lightning_advkd.AdversarialDistillation` checkpoint.

    The result is a plain ``state_dict`` for the student architecture (``student.load_state_dict(...)``); no teacher,
    discriminator or Lightning object is needed. The file is read with ``torch.load(weights_only=True)``: a checkpoint
    that would need arbitrary unpickling is refused and runs no code (see
    :func:`lightning_advkd.models.read_checkpoint`).

    Raises:
        FileNotFoundError: if the file does not exist.
        pickle.UnpicklingError: if the file needs unsafe unpickling; the message names the file and the fix.
        ValueError: if the file is damaged (truncated, not a checkpoint); the message names the file.
        KeyError: if the checkpoint holds no student weights.
    """
    path = Path(checkpoint_path)
    checkpoint = read_checkpoint(path)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else {}
    student = {k[len(STUDENT_PREFIX) :]: v for k, v in state.items() if k.startswith(STUDENT_PREFIX)}
    if not student:
        raise KeyError(f"{path} holds no 'student.*' weights: is it an AdversarialDistillation checkpoint?")
    return student


def export_student(
    source: nn.Module | str | Path,
    out_dir: str | Path,
    *,
    formats: Sequence[str] = DEFAULT_FORMATS,
    input_shape: Sequence[int] | None = None,
    student: nn.Module | None = None,
    name: str = "student",
    parity_atol: float | None = 1e-4,
    parity_batch: int = 3,
    opset_version: int | None = None,
) -> ExportedStudent:
    """Write the trained student to ``out_dir`` in ``formats``, loadable without this package.

    Args:
        source: A distillation module (anything with ``export_student()``, e.g.
            :class:`~lightning_advkd.AdversarialDistillation`), the student network itself, or the path of a
            distillation checkpoint (its ``student.*`` weights, see :func:`load_student_state_dict`).
        out_dir: Folder to write into (created).
        formats: Any of :data:`FORMATS`: ``"safetensors"``, ``"state_dict"``, ``"onnx"``, ``"module"``.
        input_shape: One input without the batch dimension, ``(C, H, W)``; needed for ``"onnx"`` unless ``source``
            has an ``input_shape`` attribute or the student a ``default_cfg.input_size``.
        student: The student architecture, filled with the checkpoint's weights when ``source`` is a path (needed for
            ``"onnx"`` and ``"module"``; the weight formats need only the checkpoint).
        name: Stem of the files (``student.safetensors``, ``student.pt``, ``student.onnx``, ``student.module.pt``).
        parity_atol: Largest absolute output difference allowed between onnxruntime and PyTorch (``None``: measure
            and record it, raise nothing).
        parity_batch: Batch size of the parity inputs; other than the export's batch of 2, so the dynamic batch
            dimension is exercised.
        opset_version: ONNX opset (``None``: the exporter's default).

    Returns:
        The files, the manifest and the ONNX parity.

    Raises:
        ValueError: For an unknown format, a missing architecture or input shape (the message names the argument), or
            ``"module"`` for an architecture whose class lives in this package.
        ImportError: When ``safetensors`` or the ONNX packages are missing, naming the extra that installs them.
        ExportParityError: When onnxruntime's outputs differ by more than ``parity_atol``.

    Example:
        >>> import tempfile
        >>> from lightning_advkd.models import create_model
        >>> with tempfile.TemporaryDirectory() as out:
        ...     sorted(export_student(create_model("lenet5"), out, formats=["state_dict"]).files)
        ['state_dict']
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"unknown export format(s) {unknown or list(formats)}: choose from {sorted(FORMATS)}")
    model, state = _resolve(source, student)
    needs_network = sorted({"onnx", "module"} & set(formats))
    if model is None and needs_network:
        raise ValueError(
            f"format(s) {needs_network} need the student architecture: pass student=<the network, e.g. "
            "create_model('lenet5', num_classes=10, in_chans=1)> with the checkpoint path"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {fmt: out / f"{name}{FORMATS[fmt]}" for fmt in formats}
    manifest: dict[str, Any] = {"torch": torch.__version__, "files": {}}
    if model is not None:
        manifest["architecture"] = f"{type(model).__module__}.{type(model).__qualname__}"
    diff = None
    for fmt, path in files.items():
        if fmt == "safetensors":
            _save_safetensors(state, path)
        elif fmt == "state_dict":
            torch.save(state, path)
        elif fmt == "module":
            assert model is not None  # needs_network above
            _save_module(model, path)
        else:
            assert model is not None  # needs_network above
            shape = _input_shape(input_shape, source, model)
            diff = _save_onnx(model, path, shape, opset_version, parity_batch)
            manifest.update(input_shape=list(shape), input_name="input", dynamic_axes={"input": [0]})
            manifest["onnx_parity"] = {"max_abs_diff": diff, "batch": parity_batch, "atol": parity_atol}
            log.info("ONNX parity against onnxruntime (CPU): max abs output difference %.3g", diff)
            if parity_atol is not None and not diff <= parity_atol:
                raise ExportParityError(
                    f"{path}: onnxruntime's outputs differ from PyTorch's by up to {diff:.3g} (> {parity_atol}). "
                    "Report it with the architecture; raise parity_atol only if that difference is acceptable."
                )
        if fmt in ("state_dict", "module"):
            _check_no_package_reference(path)
        manifest["files"][fmt] = {"file": path.name, "sha256": _sha256(path), "bytes": path.stat().st_size}
    manifest_path = out / "export.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportedStudent(files=files, manifest=manifest_path, onnx_max_abs_diff=diff)


def _resolve(source: nn.Module | str | Path, student: nn.Module | None) -> tuple[nn.Module | None, dict[str, Tensor]]:
    """The student in eval mode on the CPU (or ``None``: weights only) and its contiguous CPU ``state_dict``."""
    if isinstance(source, (str, Path)):
        weights = load_student_state_dict(source)
        if student is None:
            return None, {k: v.detach().cpu().contiguous() for k, v in weights.items()}
        model = copy.deepcopy(student)
        load_weights(model, weights, prefix="")
    elif isinstance(source, nn.Module):
        export_student = getattr(source, "export_student", None)
        model = export_student() if callable(export_student) else source
        model = copy.deepcopy(model)
    else:
        raise TypeError(f"source must be a module or a checkpoint path, got {type(source).__name__}")
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
    state = model.state_dict()
    for key, value in state.items():
        state[key] = value.detach().contiguous()
    return model, state


def _input_shape(given: Sequence[int] | None, source: Any, model: nn.Module) -> tuple[int, ...]:
    cfg = getattr(model, "default_cfg", None)
    for shape in (given, getattr(source, "input_shape", None), getattr(cfg, "input_size", None)):
        if shape is not None:
            return tuple(int(s) for s in shape)
    raise ValueError("format 'onnx' needs the shape of one input: pass input_shape=(channels, height, width)")


def _save_safetensors(state: Mapping[str, Tensor], path: Path) -> None:
    try:
        from safetensors.torch import save_file
    except ImportError as err:
        raise ImportError(f"format 'safetensors' needs the safetensors package: {_INSTALL_HINT}") from err
    # safetensors refuses tensors that share memory (tied weights): each gets its own copy.
    save_file({key: value.clone() for key, value in state.items()}, str(path), metadata={"format": "pt"})


def _save_onnx(
    model: nn.Module, path: Path, input_shape: tuple[int, ...], opset_version: int | None, parity_batch: int
) -> float:
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(f"format 'onnx' needs onnx, onnxscript and onnxruntime: {_INSTALL_HINT}") from err
    generator = torch.Generator().manual_seed(0)  # its own generator: exporting leaves the global RNG alone
    example = torch.randn(2, *input_shape, generator=generator)
    with torch.no_grad():
        single = isinstance(model(example), Tensor)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        input_names=["input"],
        output_names=["logits"] if single else None,
        opset_version=opset_version,
        verbose=False,
    )
    assert program is not None  # with dynamo=True, torch.onnx.export always returns the ONNXProgram
    program.save(str(path))
    inputs = torch.randn(parity_batch, *input_shape, generator=generator)
    with torch.no_grad():
        expected = _tensor_leaves(model(inputs))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    produced = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
    if len(produced) != len(expected):
        raise ExportParityError(f"{path}: onnxruntime gives {len(produced)} outputs, PyTorch {len(expected)}")
    return max(float((torch.from_numpy(o) - e).abs().max()) for o, e in zip(produced, expected, strict=True))


def _tensor_leaves(output: Any) -> list[Tensor]:
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [leaf for value in output.values() for leaf in _tensor_leaves(value)]
    if isinstance(output, (tuple, list)):
        return [leaf for value in output for leaf in _tensor_leaves(value)]
    return []


def _save_module(model: nn.Module, path: Path) -> None:
    """Pickle the whole module, with the plain-data copies of this package's attributes (``default_cfg``)."""
    ours = sorted({type(m).__module__ for m in model.modules() if _is_ours(type(m))})
    if ours:
        raise ValueError(
            f"format 'module' pickles the architecture's classes, and {type(model).__name__} is defined in "
            f"{', '.join(ours)}: the file would need lightning_advkd to load. Use 'safetensors' or 'state_dict' with "
            "the architecture's code, or 'onnx'."
        )
    portable = copy.deepcopy(model)
    for module in portable.modules():
        for key, value in list(vars(module).items()):
            if _is_ours(type(value)):
                if dataclasses.is_dataclass(value):
                    setattr(module, key, dataclasses.asdict(value))  # type: ignore[arg-type]
                else:
                    delattr(module, key)
    torch.save(portable, path)


def _is_ours(kind: type) -> bool:
    return kind.__module__.split(".")[0] == _PACKAGE


def _check_no_package_reference(path: Path) -> None:
    """Refuse a pickled file that names one of this package's classes (it would not load without the package)."""
    with zipfile.ZipFile(path) as archive:
        pickles = [archive.read(n) for n in archive.namelist() if n.endswith(".pkl")]
    if any(_PACKAGE.encode() in data for data in pickles):
        path.unlink()
        raise ValueError(
            f"{path.name} would reference lightning_advkd classes (a hook or attribute of this package left on the "
            "student): not written. Export 'safetensors' or 'onnx' instead, and report the model."
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
