"""lightning_advkd: Adversarial Network Compression (label-free adversarial knowledge distillation) for Lightning."""

from lightning_advkd.callbacks import AdversarialSamples, InstanceNoise, LabelSmoothing, R1Penalty, WeightPenalty
from lightning_advkd.checkpoint_io import AtomicCheckpointIO, NonFiniteCheckpointError
from lightning_advkd.collapse import CollapseGuard
from lightning_advkd.data.views import AugmentedViews, ViewSampler, view_loader
from lightning_advkd.discriminator import MLPDiscriminator
from lightning_advkd.distillation import KnowledgeDistillation
from lightning_advkd.export import load_student_state_dict
from lightning_advkd.features import FeatureTap, FeatureTapError
from lightning_advkd.fingerprint import teacher_fingerprint
from lightning_advkd.finite_guard import FiniteStateGuard, NonFiniteStateError
from lightning_advkd.metrics import DiscriminatorAccuracy, EvaluationMetrics
from lightning_advkd.module import AdversarialDistillation, NonFiniteLossError
from lightning_advkd.objective import StudentObjective
from lightning_advkd.outputs import OutputError, read_logits
from lightning_advkd.regularizer import DiscriminatorRegularizer, DiscriminatorStepInputs
from lightning_advkd.schedules import ConstantSchedule, LinearDecay, LinearWarmup, StepSchedule
from lightning_advkd.supervised import SupervisedClassifier
from lightning_advkd.teacher import FrozenTeacher
from lightning_advkd.teacher_cache import TeacherOutputCache
from lightning_advkd.teacher_student import TeacherStudentModule
from lightning_advkd.view_cache import AugmentedViewCache, ViewCacheMismatchError, cache_folder_name

__version__ = "0.1.0"

__all__ = [
    "AdversarialDistillation",
    "AdversarialSamples",
    "AtomicCheckpointIO",
    "AugmentedViewCache",
    "AugmentedViews",
    "CollapseGuard",
    "ConstantSchedule",
    "DiscriminatorAccuracy",
    "DiscriminatorRegularizer",
    "DiscriminatorStepInputs",
    "EvaluationMetrics",
    "FeatureTap",
    "FeatureTapError",
    "FiniteStateGuard",
    "FrozenTeacher",
    "InstanceNoise",
    "KnowledgeDistillation",
    "LabelSmoothing",
    "LinearDecay",
    "LinearWarmup",
    "MLPDiscriminator",
    "NonFiniteCheckpointError",
    "NonFiniteLossError",
    "NonFiniteStateError",
    "OutputError",
    "R1Penalty",
    "StepSchedule",
    "StudentObjective",
    "SupervisedClassifier",
    "TeacherOutputCache",
    "TeacherStudentModule",
    "ViewCacheMismatchError",
    "ViewSampler",
    "WeightPenalty",
    "cache_folder_name",
    "load_student_state_dict",
    "read_logits",
    "teacher_fingerprint",
    "view_loader",
]
