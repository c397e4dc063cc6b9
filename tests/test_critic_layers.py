"""A discriminator on several layers: AdversarialDistillation(discriminator_layers=...) judges attention maps too."""

from __future__ import annotations

import pytest
import torch
from helpers import fit
from tiny_networks import IMAGE_SHAPE, make_data, make_loader, make_networks

from lightning_advkd import AdversarialDistillation, AdversarialSamples, R1Penalty
from lightning_advkd.critic_layers import attention_vector
from lightning_advkd.features import FeatureTapError

LAYERS = {"discriminator_layers": [("body", "body")], "input_shape": IMAGE_SHAPE}
MAP_SIZE = IMAGE_SHAPE[1] * IMAGE_SHAPE[2]


def test_discriminator_judges_the_feature_and_each_layers_attention_map():
    module = AdversarialDistillation(*make_networks(), **LAYERS)
    assert module.discriminator_width == 24 + MAP_SIZE
    assert module.discriminator.net[0].in_features == 24 + MAP_SIZE
    images, _ = make_data(6)
    module.eval()
    student = module._student_forward(images)
    teacher = module._teacher_side(images, images)
    with torch.no_grad():
        student_map = module.student.body(images)
        teacher_map = module.teacher.body(images)
    torch.testing.assert_close(student.layers, attention_vector(student_map, IMAGE_SHAPE[1:]))
    torch.testing.assert_close(teacher.layers, attention_vector(teacher_map, IMAGE_SHAPE[1:]))
    assert torch.equal(student.perturbed_layers, student.layers)  # no adversarial samples in eval mode
    judged = module.critic_input(student.adapted, student.logits, teacher.logits, student.layers)
    assert torch.equal(judged, torch.cat([student.adapted, student.layers], dim=1))
    # unit root mean square: every layer weighs like the feature on the discriminator's first layer
    torch.testing.assert_close(student.layers.pow(2).mean(dim=1), torch.ones(6))


def test_conditioning_and_layers_compose_and_the_student_map_is_resized():
    teacher, student = make_networks()
    student.body[0].stride = (2, 2)  # the student's map is 4 x 4, the teacher's 8 x 8
    module = AdversarialDistillation(teacher, student, conditional_discriminator=True, **LAYERS)
    assert module.discriminator_width == 24 + MAP_SIZE + 4
    module.train()
    outputs = module._student_forward(make_data(5)[0])
    assert outputs.layers.shape == outputs.perturbed_layers.shape == (5, MAP_SIZE)
    assert not torch.equal(outputs.layers, outputs.perturbed_layers)  # adversarial samples per layer


@pytest.mark.parametrize("regularizer", [R1Penalty, AdversarialSamples])
def test_training_updates_both_networks_and_never_the_teacher(regularizer):
    torch.manual_seed(0)
    module = AdversarialDistillation(*make_networks(), adversarial_weight=1.0, **LAYERS)
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    student_before = [p.detach().clone() for p in module.student.parameters()]
    d_before = [p.detach().clone() for p in module.discriminator.parameters()]
    trainer = fit(module, make_loader(shuffle=True), make_loader(), max_epochs=2, callbacks=[regularizer()])
    assert module.student_step == module.discriminator_step == 8
    assert all(torch.equal(v, module.teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert all(p.grad is None for p in module.teacher.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(student_before, module.student.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, module.discriminator.parameters(), strict=True))
    assert torch.isfinite(trainer.callback_metrics["val/d_acc_real"])


def test_the_adversarial_term_reaches_the_student_through_its_layer():
    """With the discriminator's first layer seeing only the attention part, the student's conv still gets gradient."""
    gradients = []
    for blind_to in (slice(0, 24), slice(None)):  # the pooled feature only; then everything (the control)
        module = AdversarialDistillation(*make_networks(), adversarial_weight=1.0, kd_weight=0.0, **LAYERS)
        with torch.no_grad():
            module.discriminator.net[0].weight[:, blind_to] = 0
        module.train()
        images, _ = make_data(8)
        student = module._student_forward(images)
        teacher = module._teacher_side(images, images)
        module._student_loss_terms(student, teacher)["adversarial"].backward()
        gradients.append(module.student.body[0].weight.grad.abs().sum())
    assert gradients[0] > 0
    assert gradients[1] == 0


def test_bad_layers_fail_at_construction_with_the_fix():
    with pytest.raises(ValueError, match="needs input_shape"):
        AdversarialDistillation(*make_networks(), discriminator_layers=[("body", "body")])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) feature maps, so name convolutional layers"):
        AdversarialDistillation(*make_networks(), discriminator_layers=[("pool", "fc")], input_shape=IMAGE_SHAPE)
    with pytest.raises(FeatureTapError, match="Close names: body"):
        AdversarialDistillation(*make_networks(), discriminator_layers=[("bodyy", "body")], input_shape=IMAGE_SHAPE)
