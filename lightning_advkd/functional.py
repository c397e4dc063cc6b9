"""Pure loss and regularizer math of Adversarial Network Compression (ANC) and the baselines it is compared with.

Every function is stateless and typed so that tests can check it against hand-computed values. The notation follows
the paper (Belagiannis et al., ECCV-W 2018): ``f`` is a pooled penultimate feature, ``z`` a logit vector, ``D`` the
discriminator (its raw logit).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

DataTerm = Literal["l2", "l1", "kl", "none"]
GanLoss = Literal["bce", "hinge", "relativistic"]
GAN_LOSSES = ("bce", "hinge", "relativistic")
WeightNorm = Literal["l1", "l2"]


def adversarial_sample(features: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """The paper's adversarial sample: dropout applied to an already computed feature vector.

    It needs no second pass through the student (the reference implementation runs the backbone twice, doubling
    the forward cost and updating BatchNorm statistics twice).

    Args:
        features: student features of shape ``(N, C)``.
        p: drop probability.
        training: apply dropout only when ``True`` (as :func:`torch.nn.functional.dropout`).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> adversarial_sample(torch.ones(1, 4), p=0.5)
        tensor([[0., 0., 2., 0.]])
    """
    return F.dropout(features, p=p, training=training)


def generator_loss(fake_logits: Tensor, real_logits: Tensor | None = None, kind: GanLoss = "bce") -> Tensor:
    """The student's adversarial loss for a GAN loss ``kind``.

    * ``"bce"``: non-saturating, ``BCE(D(f~_S), 1)`` (the paper's);
    * ``"hinge"``: ``-E[D(f~_S)]`` (Lim & Ye 2017; Miyato et al. 2018);
    * ``"relativistic"``: relativistic average GAN (Jolicoeur-Martineau, 2019): student features should look *more*
      teacher-like than the average teacher feature, ``BCE(D(f_S) - E D(f_T), 1) + BCE(D(f_T) - E D(f_S), 0)``;
      needs ``real_logits`` (no gradient is needed through them).

    Example:
        >>> generator_loss(torch.zeros(4, 1))
        tensor(0.6931)
        >>> generator_loss(torch.tensor([[1.0], [3.0]]), kind="hinge")
        tensor(-2.)
    """
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "relativistic":
        if real_logits is None:
            raise ValueError("the relativistic generator loss needs the discriminator's logits on teacher features")
        fake_vs_real = fake_logits - real_logits.mean()
        real_vs_fake = real_logits - fake_logits.mean()
        return F.binary_cross_entropy_with_logits(
            fake_vs_real, torch.ones_like(fake_vs_real)
        ) + F.binary_cross_entropy_with_logits(real_vs_fake, torch.zeros_like(real_vs_fake))
    raise ValueError(f"unknown GAN loss {kind!r}; choose one of {GAN_LOSSES}")


def discriminator_loss(
    real_logits: Tensor, fake_logits: Tensor, real_target: float = 1.0, kind: GanLoss = "bce"
) -> Tensor:
    """Discriminator loss for a GAN loss ``kind``.

    * ``"bce"``: ``BCE(D(f_T), real_target) + BCE(D(f_S), 0)``;
    * ``"hinge"``: ``E[relu(1 - D(f_T))] + E[relu(1 + D(f_S))]``;
    * ``"relativistic"``: ``BCE(D(f_T) - E D(f_S), real_target) + BCE(D(f_S) - E D(f_T), 0)``.

    Args:
        real_logits: ``D`` on teacher features.
        fake_logits: ``D`` on (detached) student features.
        real_target: the label of teacher features; below 1 for one-sided label smoothing (not with ``"hinge"``).
        kind: the GAN loss.

    Example:
        >>> discriminator_loss(torch.zeros(2, 1), torch.zeros(2, 1))
        tensor(1.3863)
        >>> discriminator_loss(torch.zeros(2, 1), torch.zeros(2, 1), kind="hinge")
        tensor(2.)
    """
    if kind == "hinge":
        if real_target != 1.0:
            raise ValueError("label smoothing (real_target < 1) is not defined for the hinge loss; use 'bce'")
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "relativistic":
        real_logits, fake_logits = real_logits - fake_logits.mean(), fake_logits - real_logits.mean()
    elif kind != "bce":
        raise ValueError(f"unknown GAN loss {kind!r}; choose one of {GAN_LOSSES}")
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def conditioned(inputs: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """A conditional discriminator's input: ``inputs`` with the teacher's soft prediction for the same sample.

    ``cat([inputs, softmax(z_T / temperature)])``: a discriminator that sees the teacher's prediction next to a
    feature can only be fooled by a student feature that fits *that sample*, not by one that merely follows the
    teacher's marginal feature distribution. Needs no labels.

    Example:
        >>> conditioned(torch.ones(1, 2), torch.zeros(1, 2))
        tensor([[1.0000, 1.0000, 0.5000, 0.5000]])
    """
    return torch.cat([inputs, F.softmax(teacher_logits.detach() / temperature, dim=1)], dim=1)


def adversarial_samples_penalty(perturbed_fake_logits: Tensor) -> Tensor:
    """The paper's regularizer: perturbed student features shown to ``D`` labelled as teacher, ``BCE(D(f~_S), 1)``.

    Example:
        >>> adversarial_samples_penalty(torch.zeros(3, 1))
        tensor(0.6931)
    """
    return F.binary_cross_entropy_with_logits(perturbed_fake_logits, torch.ones_like(perturbed_fake_logits))


def weight_penalty(parameters: Iterable[Tensor], norm: WeightNorm = "l2") -> Tensor:
    """L1 (sum of absolute values) or L2 (sum of squares) of the given weights, to be **added** to ``L_D``.

    The reference implementation subtracts it, which rewards growing weights; this package adds it.

    Example:
        >>> weight_penalty([torch.tensor([1.0, -2.0])], norm="l1")
        tensor(3.)
        >>> weight_penalty([torch.tensor([1.0, -2.0])], norm="l2")
        tensor(5.)
    """
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    terms = [p.abs().sum() if norm == "l1" else p.pow(2).sum() for p in parameters]
    if not terms:
        raise ValueError("weight_penalty got no parameters")
    return torch.stack(terms).sum()


def r1_penalty(real_logits: Tensor, real_inputs: Tensor) -> Tensor:
    """R1 gradient penalty (Mescheder et al., 2018): ``0.5 * E ||d D(x) / d x||^2`` on real (teacher) inputs.

    ``real_inputs`` must require grad and ``real_logits`` must have been computed from them.

    Example:
        >>> x = torch.tensor([[1.0, 2.0]], requires_grad=True)
        >>> r1_penalty((3 * x).sum(dim=1, keepdim=True), x)
        tensor(9.)
    """
    if not real_inputs.requires_grad:
        raise ValueError("r1_penalty needs real_inputs with requires_grad=True, set before computing real_logits")
    (grad,) = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True)
    return 0.5 * grad.pow(2).flatten(1).sum(dim=1).mean()


def instance_noise(features: Tensor, std: float) -> Tensor:
    """Gaussian instance noise (Sønderby et al., 2017) added to discriminator inputs; identity when ``std == 0``."""
    if std == 0:
        return features
    return features + std * torch.randn_like(features)


def logit_matching_loss(
    student_logits: Tensor, teacher_logits: Tensor, kind: DataTerm = "l2", temperature: float = 4.0
) -> Tensor:
    """The data term of the student loss between student and teacher logits.

    Args:
        student_logits: ``z_S``, shape ``(N, K)``.
        teacher_logits: ``z_T``, shape ``(N, K)``.
        kind: ``"l2"`` (mean squared error, the reference implementation), ``"l1"``, ``"kl"`` (Hinton KD: KL
            divergence of tempered softmaxes, scaled by ``temperature ** 2``) or ``"none"`` (zero).
        temperature: softmax temperature of ``"kl"``.

    Example:
        >>> logit_matching_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), kind="l2")
        tensor(0.5000)
    """
    if kind == "l2":
        return F.mse_loss(student_logits, teacher_logits)
    if kind == "l1":
        return F.l1_loss(student_logits, teacher_logits)
    if kind == "kl":
        return kd_loss(student_logits, teacher_logits, temperature)
    if kind == "none":
        return student_logits.new_zeros(())
    raise ValueError(f"unknown data term {kind!r}; choose one of 'l2', 'l1', 'kl', 'none'")


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton knowledge distillation: ``T^2 * KL(softmax(z_T / T) || softmax(z_S / T))``, batch mean.

    Example:
        >>> kd_loss(torch.zeros(1, 2), torch.zeros(1, 2))
        tensor(0.)
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def hint_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """FitNets-style hint: mean squared error between (adapted) student and teacher features."""
    return F.mse_loss(student_features, teacher_features)


def attention_map(feature_map: Tensor, p: int = 2) -> Tensor:
    """Spatial attention (Zagoruyko & Komodakis, 2017): L2-normalised ``mean_c |A_c|^p`` of an ``(N, C, H, W)`` map."""
    if feature_map.dim() != 4:
        raise ValueError(f"attention transfer needs (N, C, H, W) feature maps, got shape {tuple(feature_map.shape)}")
    return F.normalize(feature_map.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def attention_transfer_loss(student_map: Tensor, teacher_map: Tensor, p: int = 2) -> Tensor:
    """Attention transfer: mean squared distance between the normalised attention maps of student and teacher.

    Maps of different spatial size are compared after resizing the student's to the teacher's.
    """
    if student_map.dim() != 4 or teacher_map.dim() != 4:
        raise ValueError(
            f"attention transfer needs (N, C, H, W) feature maps, got shapes {tuple(student_map.shape)} and "
            f"{tuple(teacher_map.shape)}"
        )
    teacher_attention = attention_map(teacher_map, p).view(-1, *teacher_map.shape[-2:])
    return attention_distance(student_map, teacher_attention, p)


def attention_distance(student_map: Tensor, teacher_attention: Tensor, p: int = 2) -> Tensor:
    """Attention transfer against a precomputed teacher attention map of shape ``(N, H, W)`` (see ``attention_map``).

    The student's ``(N, C, h, w)`` map is resized to ``(H, W)`` when the sizes differ.
    """
    student_map = resized_map(student_map, tuple(teacher_attention.shape[-2:]))
    return (attention_map(student_map, p) - teacher_attention.flatten(1)).pow(2).mean()


def resized_map(feature_map: Tensor, size: tuple[int, ...]) -> Tensor:
    """An ``(N, C, h, w)`` feature map resized (bilinear) to spatial ``size``; unchanged when it already has it."""
    if tuple(feature_map.shape[-2:]) == tuple(size):
        return feature_map
    return F.interpolate(feature_map, size=size, mode="bilinear", align_corners=False)
