"""export_student: safetensors, state_dict, ONNX (parity with onnxruntime) and pickled torchvision modules, all read
back in a Python that cannot import lightning_advkd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_advkd.export import DEFAULT_FORMATS, export_student, load_student_state_dict
from lightning_advkd.models import create_model

pytest.importorskip("safetensors")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

PARITY_ATOL = 1e-4

# Run with `python -I` (no PYTHONPATH, no user site, not the script's folder) and an import blocker: the editable
# install of this package stays on sys.path, so only the blocker proves nothing of it is imported.
BLOCKER = """
import sys


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "lightning_advkd":
            raise ImportError(f"{name} imported: the exported files must load without lightning_advkd")
        return None


sys.meta_path.insert(0, _Blocker())
"""

LENET_READER = """
import numpy as np
import onnxruntime
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn


class LeNet5(nn.Module):  # the architecture, declared again with torch alone
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.pool = nn.AdaptiveAvgPool2d((5, 5))
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.max_pool2d(F.relu(self.conv2(F.max_pool2d(F.relu(self.conv1(x)), 2))), 2))
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))))


folder = sys.argv[1]
inputs = torch.from_numpy(np.load(f"{folder}/inputs.npy"))
expected = np.load(f"{folder}/expected.npy")
for weights in (load_file(f"{folder}/student.safetensors"), torch.load(f"{folder}/student.pt", weights_only=True)):
    model = LeNet5().eval()
    model.load_state_dict(weights)
    with torch.no_grad():
        assert np.allclose(model(inputs).numpy(), expected, rtol=0, atol=1e-5)  # thread counts may differ
session = onnxruntime.InferenceSession(f"{folder}/student.onnx", providers=["CPUExecutionProvider"])
(logits,) = session.run(None, {"input": inputs.numpy()})
print("onnxruntime max abs diff", float(np.abs(logits - expected).max()))
assert np.abs(logits - expected).max() < 1e-4
assert not [name for name in sys.modules if name.startswith("lightning_advkd")]
print("loaded without lightning_advkd")
"""

TORCHVISION_READER = """
import numpy as np
import torch
import torchvision
from torch import nn

folder = sys.argv[1]
inputs = torch.from_numpy(np.load(f"{folder}/inputs.npy"))
expected = np.load(f"{folder}/expected.npy")
whole = torch.load(f"{folder}/student.module.pt", weights_only=False).eval()
model = torchvision.models.shufflenet_v2_x0_5(num_classes=10)
model.conv1[0] = nn.Conv2d(1, 24, 3, 2, 1, bias=False)  # the 1-channel stem create_model made
model.load_state_dict(torch.load(f"{folder}/student.pt", weights_only=True))
with torch.no_grad():
    assert np.array_equal(whole(inputs).numpy(), expected)
    assert np.array_equal(model.eval()(inputs).numpy(), expected)
assert type(whole).__module__.startswith("torchvision") and isinstance(whole.default_cfg, dict)
assert not [name for name in sys.modules if name.startswith("lightning_advkd")]
print("loaded without lightning_advkd")
"""


def read_without_package(reader: str, folder: Path) -> str:
    script = folder / "reader.py"
    script.write_text(BLOCKER + textwrap.dedent(reader))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def save_expected(model: torch.nn.Module, folder: Path, shape: tuple[int, ...]) -> None:
    inputs = torch.randn(5, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.eval()(inputs)
    np.save(folder / "inputs.npy", inputs.numpy())
    np.save(folder / "expected.npy", expected.numpy())


def test_lenet_student_exports_to_files_that_load_without_the_package(tmp_path: Path) -> None:
    student = create_model("lenet5", num_classes=10, in_chans=1)
    result = export_student(student, tmp_path, input_shape=(1, 28, 28))
    print(f"ONNX parity: max abs logit difference {result.onnx_max_abs_diff:.3g}")
    assert sorted(result.files) == sorted(DEFAULT_FORMATS)
    assert result.onnx_max_abs_diff is not None and result.onnx_max_abs_diff < PARITY_ATOL
    manifest = json.loads(result.manifest.read_text())
    assert manifest["input_shape"] == [1, 28, 28] and manifest["onnx_parity"]["max_abs_diff"] < PARITY_ATOL
    assert set(manifest["files"]) == set(DEFAULT_FORMATS) and all(
        len(f["sha256"]) == 64 for f in manifest["files"].values()
    )
    save_expected(student, tmp_path, (1, 28, 28))
    assert "loaded without lightning_advkd" in read_without_package(LENET_READER, tmp_path)


def test_torchvision_student_pickles_without_a_reference_to_the_package(tmp_path: Path) -> None:
    student = create_model("tv_shufflenet_v2_x0_5", num_classes=10, in_chans=1)
    assert type(student.default_cfg).__module__.startswith("lightning_advkd"), "the case the export must clean"
    result = export_student(student, tmp_path, formats=["state_dict", "module"])
    for path in result.files.values():
        with zipfile.ZipFile(path) as archive:
            assert not any(b"lightning_advkd" in archive.read(n) for n in archive.namelist() if n.endswith(".pkl"))
    assert type(student.default_cfg).__module__.startswith("lightning_advkd"), "the student itself is left as it was"
    save_expected(student, tmp_path, (1, 32, 32))
    assert "loaded without lightning_advkd" in read_without_package(TORCHVISION_READER, tmp_path)


def test_checkpoint_path_gives_the_students_weights(tmp_path: Path) -> None:
    student = create_model("lenet5")
    teacher = create_model("lenet5")
    state = {f"student.{k}": v for k, v in student.state_dict().items()}
    state.update({f"teacher.{k}": v for k, v in teacher.state_dict().items()})
    checkpoint = tmp_path / "run.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, checkpoint)

    weights_only = export_student(checkpoint, tmp_path / "weights", formats=["safetensors", "state_dict"])
    from safetensors.torch import load_file

    for loaded in (load_file(weights_only.files["safetensors"]), torch.load(weights_only.files["state_dict"])):
        assert loaded.keys() == student.state_dict().keys()
        assert all(torch.equal(loaded[k], v) for k, v in student.state_dict().items())
    assert load_student_state_dict(checkpoint).keys() == student.state_dict().keys()

    with pytest.raises(ValueError, match="student="):
        export_student(checkpoint, tmp_path / "onnx", formats=["onnx"])
    rebuilt = export_student(checkpoint, tmp_path / "onnx", formats=["onnx"], student=create_model("lenet5"))
    assert rebuilt.onnx_max_abs_diff is not None and rebuilt.onnx_max_abs_diff < PARITY_ATOL


def test_module_format_is_refused_for_this_packages_architectures(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"lightning_advkd\.models\.lenet.*'onnx'"):
        export_student(create_model("lenet5"), tmp_path, formats=["module"])
    assert not list(tmp_path.iterdir())


def test_unknown_format_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"torchscript.*choose from.*onnx"):
        export_student(create_model("lenet5"), tmp_path, formats=["torchscript"])


def test_export_leaves_the_global_rng_and_the_student_alone(tmp_path: Path) -> None:
    student = create_model("lenet5").train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    export_student(student, tmp_path, formats=["onnx"], input_shape=(1, 28, 28))
    assert torch.equal(torch.rand(1), expected)
    assert student.training and all(torch.equal(before[k], v) for k, v in student.state_dict().items())
