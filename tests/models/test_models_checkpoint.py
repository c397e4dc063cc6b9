"""load_weights / create_model(checkpoint=...): round trips for every format, and errors that name the bad keys."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from lightning_advkd.models import CheckpointMismatchError, create_model, load_weights


def _randomised(name: str = "resnet8", **kwargs: Any) -> nn.Module:
    """A model whose every parameter and buffer (BN statistics included) is random, so a copy cannot be a default."""
    model = create_model(name, **kwargs)
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.fill_(7)
    return model.eval()


def _assert_same_weights(source: nn.Module, target: nn.Module) -> None:
    expected, actual = source.state_dict(), target.state_dict()
    assert list(expected) == list(actual)
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), target.eval()(x))


def _lightning_style(model: nn.Module, prefix: str = "student.") -> dict[str, Any]:
    """The layout of a Lightning checkpoint: other networks' weights beside the model's, plus training state."""
    state = {f"{prefix}{k}": v for k, v in model.state_dict().items()}
    state |= {"discriminator.net.0.weight": torch.ones(128, 64), "adapter.weight": torch.ones(64, 64)}
    return {"epoch": 3, "global_step": 120, "state_dict": state, "hyper_parameters": {"lr": 0.1, "name": "resnet8"}}


FORMATS: dict[str, Callable[[nn.Module], Any]] = {
    "lightning_student": lambda m: _lightning_style(m, "student."),
    "lightning_model": lambda m: _lightning_style(m, "model."),
    "lightning_nested": lambda m: _lightning_style(m, "net._orig_mod."),
    "plain_state_dict": lambda m: m.state_dict(),
    "saved_module": lambda m: m,
    "model_key_dict": lambda m: {"model": m.state_dict(), "best_acc": torch.tensor(71.2), "epoch": 240},
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_file_round_trip_is_bit_exact(tmp_path: Path, fmt: str) -> None:
    source = _randomised()
    path = tmp_path / f"{fmt}.ckpt"
    torch.save(FORMATS[fmt](source), path)
    target = create_model("resnet8")
    result = load_weights(target, path)
    assert result.missing_keys == [] and result.unexpected_keys == []
    _assert_same_weights(source, target)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_in_memory_round_trip(fmt: str) -> None:
    source = _randomised()
    target = create_model("resnet8")
    load_weights(target, FORMATS[fmt](source))
    _assert_same_weights(source, target)


@pytest.mark.parametrize(("fmt", "prefix"), [("lightning_student", "student."), ("lightning_nested", "net._orig_mod.")])
def test_prefix_is_detected(fmt: str, prefix: str) -> None:
    assert load_weights(create_model("resnet8"), FORMATS[fmt](_randomised())).prefix == prefix


@pytest.mark.parametrize("given", ["student", "student.", ".student."])
def test_given_prefix_with_or_without_dot(given: str) -> None:
    source = _randomised()
    target = create_model("resnet8")
    assert load_weights(target, _lightning_style(source), prefix=given).prefix == "student."
    _assert_same_weights(source, target)


def test_create_model_loads_a_checkpoint(tmp_path: Path) -> None:
    source = _randomised("resnet8", num_classes=100)
    torch.save(_lightning_style(source), tmp_path / "last.ckpt")
    target = create_model("resnet8", num_classes=100, checkpoint=tmp_path / "last.ckpt")
    _assert_same_weights(source, target)
    target = create_model(
        "resnet8", num_classes=100, checkpoint=str(tmp_path / "last.ckpt"), checkpoint_prefix="student"
    )
    _assert_same_weights(source, target)


def test_real_lightning_checkpoint(tmp_path: Path) -> None:
    """A checkpoint written by Lightning's own Trainer, with hyper-parameters, loops and optimizer state."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    class Distiller(L.LightningModule):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.student = create_model("resnet8")

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            return nn.functional.cross_entropy(self.student(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    module = Distiller()
    data = DataLoader(TensorDataset(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))), batch_size=2)
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(module, data)
    trainer.save_checkpoint(tmp_path / "real.ckpt")
    target = create_model("resnet8")
    assert load_weights(target, tmp_path / "real.ckpt").prefix == "student."
    _assert_same_weights(module.student.eval(), target)


def test_hydra_config_in_hyper_parameters_loads_without_unsafe_unpickling(tmp_path: Path) -> None:
    omegaconf = pytest.importorskip("omegaconf")
    source = _randomised()
    checkpoint = _lightning_style(source)
    checkpoint["hyper_parameters"] = {"cfg": omegaconf.OmegaConf.create({"model": {"name": "resnet8"}, "seeds": [1]})}
    torch.save(checkpoint, tmp_path / "hydra.ckpt")
    target = create_model("resnet8")
    load_weights(target, tmp_path / "hydra.ckpt")
    _assert_same_weights(source, target)


class _Payload:
    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def test_file_with_arbitrary_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save({"state_dict": _randomised().state_dict(), "payload": _Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(pickle.UnpicklingError, match=r"evil\.ckpt.*builtins\.print.*state_dict"):
        load_weights(create_model("resnet8"), tmp_path / "evil.ckpt")
    assert "this must never run" not in capsys.readouterr().out


def test_unsafe_unpickling_is_refused_with_the_way_out(tmp_path: Path) -> None:
    torch.save(_randomised().state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match=r"plain\.pt.*torch\.load and weights_only set to False, and pass the loaded"):
        load_weights(create_model("resnet8"), tmp_path / "plain.pt", weights_only=False)


def test_saved_module_of_an_imported_class_loads_safely(tmp_path: Path) -> None:
    source = _randomised()
    torch.save(source, tmp_path / "module.pt")
    with pytest.raises(pickle.UnpicklingError, match=r"module\.pt.*torch\.save\(model\.state_dict\(\), path\)"):
        load_weights(create_model("resnet8"), tmp_path / "module.pt", weights_only=True)
    target = create_model("resnet8")
    load_weights(target, tmp_path / "module.pt")  # weights_only=True with the model's classes allowed
    _assert_same_weights(source, target)
    # Once loaded, a module object is accepted as it is.
    again = create_model("resnet8")
    load_weights(again, source)
    _assert_same_weights(source, again)


@pytest.mark.parametrize("size", [0, 100, 2000])
def test_truncated_file_names_the_file(tmp_path: Path, size: int) -> None:
    torch.save(_randomised().state_dict(), tmp_path / "whole.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:size])
    with pytest.raises(ValueError, match=r"cut\.pt' is damaged or not a torch checkpoint"):
        load_weights(create_model("resnet8"), tmp_path / "cut.pt")


def test_shape_mismatch_names_the_keys(tmp_path: Path) -> None:
    torch.save(_randomised(num_classes=100).state_dict(), tmp_path / "c100.pt")
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights(create_model("resnet8", num_classes=10), tmp_path / "c100.pt")
    message = str(info.value)
    assert "shape mismatches (2)" in message
    assert "fc.weight: checkpoint (100, 64) vs model (10, 64)" in message and "fc.bias" in message
    assert "c100.pt" in message and "prefix tried: ''" in message
    # Shape mismatches are never skipped silently, even without strict.
    with pytest.raises(CheckpointMismatchError):
        load_weights(create_model("resnet8", num_classes=10), tmp_path / "c100.pt", strict=False)


def test_missing_and_unexpected_keys_are_listed_with_counts() -> None:
    state = {f"student.{k}": v for k, v in _randomised().state_dict().items() if not k.startswith("layer3.0.")}
    state["student.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights(create_model("resnet8"), {"state_dict": state})
    message = str(info.value)
    assert "prefix tried: 'student.' (auto-detected)" in message
    assert "missing keys (18): layer3.0.conv1.weight" in message and "(13 more)" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "shape mismatches (0)" in message


def test_non_strict_reports_instead_of_raising() -> None:
    source = _randomised()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")} | {"aux.weight": torch.ones(1)}
    target = create_model("resnet8")
    result = load_weights(target, state, strict=False)
    assert result.missing_keys == ["fc.weight", "fc.bias"]
    assert result.unexpected_keys == ["aux.weight"]
    assert torch.equal(target.conv1.weight, source.conv1.weight)


def test_wrong_prefix_says_which_prefix_was_tried() -> None:
    with pytest.raises(CheckpointMismatchError, match=r"prefix tried: 'teacher\.' \(given\)") as info:
        load_weights(create_model("resnet8"), _lightning_style(_randomised()), prefix="teacher")
    assert "missing keys (" in str(info.value) and "No key matched" in str(info.value)


def test_wrong_architecture_is_reported() -> None:
    with pytest.raises(CheckpointMismatchError, match="does not fit CifarResNet") as info:
        load_weights(create_model("resnet20"), create_model("resnet8").state_dict())
    assert "missing keys (" in str(info.value) and "layer1.1." in str(info.value)


def test_two_networks_that_fit_make_the_prefix_ambiguous() -> None:
    state = {f"{who}.{k}": v for who in ("student", "teacher") for k, v in _randomised().state_dict().items()}
    with pytest.raises(ValueError, match=r"\['student\.', 'teacher\.'\].*prefix="):
        load_weights(create_model("resnet8"), state)
    assert load_weights(create_model("resnet8"), state, prefix="teacher").prefix == "teacher."


def test_the_network_that_fits_exactly_wins_over_a_larger_one() -> None:
    """resnet56 contains every key of resnet20 with the same shapes; its extra blocks must not win the detection."""
    student = _randomised("resnet20")
    state = {f"student.{k}": v for k, v in student.state_dict().items()}
    state |= {f"teacher.{k}": v for k, v in create_model("resnet56").state_dict().items()}
    target = create_model("resnet20")
    assert load_weights(target, {"state_dict": state}).prefix == "student."
    _assert_same_weights(student, target)


def test_not_a_checkpoint() -> None:
    with pytest.raises(ValueError, match=r"holds no weights.*epoch"):
        load_weights(create_model("resnet8"), {"epoch": 3, "optimizer_states": []})
    with pytest.raises(ValueError, match="holds a list"):
        load_weights(create_model("resnet8"), [1, 2])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_weights(create_model("resnet8"), "/nonexistent/weights.ckpt")
