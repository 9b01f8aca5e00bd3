"""One dataclass per run. Every loss term of CPSC-DFKD is a switch with a weight,
so an ablation is a different config, never a code edit (book chapter 7)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, asdict
from typing import Optional

from . import CpscError


@dataclass
class DistillConfig:
    method: str = "cpsc"
    student: str = "cnn_small"
    # Budget: one iteration = g_steps generator updates, then s_steps student updates.
    # The defaults are the quick CPU profile for the built-in digits (about 2-3 minutes on
    # 2 cores); configs/*.yaml hold the paper's full-scale schedules.
    iters: int = 600
    batch_size: int = 128
    g_steps: int = 1
    s_steps: int = 5
    # Student optimiser: SGD with linear warm-up then cosine annealing.
    lr_student: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # Linear warm-up of the student's learning rate over this share of the run. 0.1 since 0.8.0
    # (paper and configs/*.yaml: 1/60, ten epochs of 600): with 6 warm-up iterations of a
    # 300-iteration run the student diverged in its first steps on `shapes` in 4 of 10 validation
    # seeds (mean validation accuracy 67.9 %; 97.8 % with 0.1, every seed above 93 %); on the
    # digits, 98.1 % and 98.0 % (data/bench/tuning/README.md).
    warmup_frac: float = 0.1
    # The learning-rate schedule of the student (and of G when generator_cosine): "cosine" (after the
    # warm-up), "step" (x 0.1 at each fraction of the run in lr_steps; DAFL's and DFAD's CIFAR scripts),
    # or "constant" (their MNIST scripts).
    lr_schedule: str = "cosine"
    lr_steps: tuple = (0.4, 0.8)
    # "sgd" (momentum, weight_decay) or "adam" (DAFL's MNIST student)
    student_optimizer: str = "sgd"
    # Order of one iteration: the generator steps first (CPSC), or the student's first (DFAD).
    student_first: bool = False
    # Generator optimiser: Adam. 1e-2 for the quick profile (paper: 1e-3): with one persistent Adam,
    # 1e-3 needs thousands of steps before the teacher recognises the conditioning class (book
    # chapter 4); configs/*.yaml keep the paper's 1e-3.
    lr_generator: float = 1e-2
    generator_cosine: bool = True  # G's LR follows the student's schedule, so late adversarial drift stays small
    generator_betas: tuple = (0.5, 0.999)
    nz: int = 256
    # the paper uses 64 at 32x32; 32 is ample for tiny images and 4x cheaper
    ngf: int = 32
    conditional: bool = True
    # Loss switches and weights. The reference weights (the command in the authors' README; book
    # chapter 7) are alpha=5, beta=1, gamma=0.7, eta=0.7 with student CE on; configs/*.yaml use
    # exactly those. For the quick CPU profile (a few hundred iterations) eight defaults differ,
    # because measured runs were better that way (book chapter 7 and data/bench/README.md):
    # alpha=1, gamma=0.2, eta=1, no student CE, the adversarial terms off for the first 30 % of
    # the run (adv_warmup), generator lr 1e-2, the BN prior averaged over layers (bn_reduce="mean")
    # and the student's warm-up over 10 % of the run (warmup_frac).
    use_adv: bool = True  # generator maximises the teacher/student disagreement (-KL)
    # Fraction of the run before the adversarial terms switch on (paper: 0). Early on the student
    # knows nothing, so maximising its disagreement with the teacher only slows the start.
    adv_warmup: float = 0.3
    use_ikd: bool = True
    # IKD weight (paper: 5; with -log MSE that push dominates short runs)
    alpha: float = 1.0
    use_bn: bool = True
    beta: float = 1.0  # BN-statistics weight
    use_scl: bool = True
    # contrastive weight (paper: 0.7; it narrowed each class in short runs)
    gamma: float = 0.2
    # pseudo-supervised CE of the teacher against y, trains G (was use_ce)
    teacher_ce: bool = True
    # pseudo-supervised CE weight (paper: 0.7). 1.0 since 0.9.0: on validation seeds it made the
    # samples more class-specific on digits, shapes and scenes without costing accuracy
    # (data/bench/tuning/eta/); 0.5 before
    eta: float = 1.0
    temperature: float = 0.07  # SupCon temperature tau
    # Baselines (presets below switch these): where the student's inputs come from, the
    # distillation distance, and DAFL's generator losses (one-hot, activation, information entropy).
    input_source: str = "generator"  # "generator" | "inversion" | "noise" (Gaussian images) | "data" (real)
    kd_loss: str = "kl"  # "kl" | "l1" (DFAD's mean absolute logit difference)
    use_dafl: bool = False
    dafl_onehot: float = 1.0
    dafl_activation: float = 0.1
    dafl_entropy: float = 5.0
    # DAFL's published code takes the information entropy with log10
    dafl_log10: bool = False
    kd_temperature: float = 1.0
    student_scl: bool = False  # authors' code: the contrast trains G only
    # Student also learns CE(S(x), y) (paper: on), independently of teacher_ce. Off for short runs:
    # the teacher then agrees with the conditioning label y on only 20-50 % of generated images,
    # and CE(S(x), y) trains the student against the teacher it is distilling.
    student_ce: bool = False
    ikd_log: bool = True  # generator uses -log(MSE) (bounded push) rather than -MSE
    # student uses log ||t - s||_2 (authors' CIFAR-10 form) rather than MSE
    ikd_student_log: bool = False
    # The BN prior: "sum" over the teacher's BN layers (paper) or "mean" (one layer's size: the prior
    # then weighs the same against eta * CE whatever the teacher's depth). Quick profile: mean.
    bn_reduce: str = "mean"
    # Image priors and augmentation of the generated images before the teacher sees them in the
    # generator step (DeepInversion, Yin et al. 2020): weight 0 / 0 pixels / false = off.
    # total-variation prior (mean absolute difference of neighbouring pixels)
    prior_tv: float = 0.0
    prior_l2: float = 0.0  # L2 prior (mean squared value of the normalised image)
    # random shift by up to this many pixels (same shift for the whole batch)
    jitter: int = 0
    # random horizontal flip (only where mirror images keep their class)
    flip: bool = False
    # Within-class diversity of a conditional generator: MSGAN's mode-seeking term (Mao et al. 2019)
    # with this weight; each generator batch then pairs every label with two noise vectors (0 = off).
    diversity: float = 0.0
    # Replay (generative pseudo replay, Binici et al. 2022): this fraction of every student batch is
    # drawn from a pool of the last `replay_batches` batches of images the student has learnt from,
    # the rest is generated fresh; 0 = every student batch fresh (the paper).
    replay: float = 0.0
    replay_batches: int = 50
    # DeepInversion (Yin et al. 2020), input_source="inversion": no generator; each iteration optimises a
    # fresh batch of pixels for `inversion_steps` Adam steps on the objective above (CE + BN prior +
    # image priors, jitter/flip, optionally the ADI competition term), keeps the lowest-loss images in a
    # pool of `pool_batches` batches, and the student learns by KD from batches drawn from that pool.
    inversion_steps: int = 200  # published: 2000 per batch (CIFAR-10)
    # published CIFAR-10 setting (Adam on the pixels, fresh for each batch)
    inversion_lr: float = 0.05
    # weight of the first BN layer in the BN prior, for the generator and for inversion
    # (DeepInversion ImageNet: 10)
    bn_first_weight: float = 1.0
    # Adaptive DeepInversion: 1 - JS(T, S) competition term (0 = plain DI)
    adi_weight: float = 0.0
    # synthetic batches kept for the student (inversion); oldest replaced
    pool_batches: int = 0
    # What `inversion` optimises per batch: the "pixels" themselves (DeepInversion), or a "generator"
    # re-initialised for every batch together with its inputs z (CMI, Fang et al. 2021), whose images
    # also learn an instance contrast (weight cmi_weight, temperature cmi_temperature): a projection
    # head on the teacher's features must match each image's local view (a random crop of 25-100 % of
    # its area, resized) to its own global view among the batch and `cmi_negatives` entries of a
    # memory bank of `cmi_bank` earlier images. cmi_adv: CMI's adversarial term (the teacher/student
    # KL of the images both classify alike, maximised).
    inversion_target: str = "pixels"
    # A new batch every `inversion_every` iterations (the published DeepInversion and CMI scripts make one
    # per 400 student steps, i.e. every 80 iterations of 5 student steps); the student learns from the
    # pool in between.
    inversion_every: int = 1
    cmi_weight: float = 0.0
    cmi_temperature: float = 0.1
    cmi_bank: int = 4096
    cmi_negatives: int = 1024
    cmi_head_dim: int = 128
    cmi_adv: float = 0.0
    # The features CMI's head contrasts: the channel means of the input of every teacher BN layer,
    # concatenated ("bn_inputs", as CMI's code), or the teacher's penultimate features ("penultimate",
    # what cpsc-lite 0.5.0 used).
    cmi_features: str = "bn_inputs"
    # The authors' published code, quirk by quirk (all off = the clean method; `reference_compat` turns
    # them all on, book chapter 7): CE on softmax outputs, a generator Adam re-created at every step,
    # IKD in the authors' dataset-dependent form, and the best test accuracy seen as the reported one.
    ce_on_softmax: bool = False
    generator_adam_reset: bool = False
    # CIFAR-10: G -log MSE, S log ||t - s||_2; other data sets: -MSE / MSE
    ikd_authors_form: bool = False
    # metrics' "reported_acc" = best evaluation, not the final one
    report_best: bool = False
    # Bookkeeping.
    eval_every: int = 100
    # diversity / balance / FID of synthetic images at each evaluation
    diagnostics: bool = True
    log_every: int = 10
    ckpt_every: int = 100
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        validate(self)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["generator_betas"] = list(self.generator_betas)
        d["lr_steps"] = list(self.lr_steps)
        return d

    def replace(self, **changes) -> "DistillConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict) -> "DistillConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        d = renamed_settings(d)
        unknown = sorted(set(d) - names)
        if unknown:
            raise CpscError(
                f"Unknown config keys: {', '.join(unknown)}. Valid keys: {', '.join(sorted(names))}."
            )
        d = dict(d)
        for key in ("generator_betas", "lr_steps"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)

    @classmethod
    def from_saved(cls, d: dict) -> "DistillConfig":
        """A config stored in a run's state.pt; settings added since take the value the run trained with."""
        d = dict(d)
        for key, old_value in SETTINGS_ADDED_LATER.items():
            d.setdefault(key, old_value)
        return cls.from_dict(d)


#: Settings whose name changed: old name -> new name. Saved runs, YAML files and ``--set`` still accept
#: the old spelling.
RENAMED_SETTINGS: dict[str, str] = {
    "scl_for_student": "student_scl",
    "use_ce": "teacher_ce",
}


def renamed_settings(d: dict) -> dict:
    """``d`` with old setting names (:data:`RENAMED_SETTINGS`) replaced by today's; both at once is an error.

    ``use_ce`` (0.5.0 and earlier) switched the pseudo-supervision as a whole: the student's CE needed it
    too. So ``use_ce: false`` becomes ``teacher_ce: false`` *and* ``student_ce: false``, and a saved run
    or a config file keeps the meaning it was written with."""
    out = dict(d)
    for old, new in RENAMED_SETTINGS.items():
        if old in out:
            if new in out:
                raise CpscError(
                    f"The settings {old!r} and {new!r} are one setting (renamed to {new!r}); "
                    f"give only {new!r}."
                )
            out[new] = out.pop(old)
    if d.get("use_ce", True) is False:
        out["student_ce"] = False
    return out


# Settings introduced after runs could already be saved, with the value that reproduces how
# those runs trained (a resumed run must continue as it started, not pick up a new default).
SETTINGS_ADDED_LATER: dict[str, object] = {
    "adv_warmup": 0.0,
    "ikd_student_log": False,
    "bn_reduce": "sum",
    "prior_tv": 0.0,
    "prior_l2": 0.0,
    "jitter": 0,
    "flip": False,
    "ce_on_softmax": False,
    "generator_adam_reset": False,
    "ikd_authors_form": False,
    "report_best": False,
    "inversion_steps": 200,
    "inversion_lr": 0.05,
    "bn_first_weight": 1.0,
    "adi_weight": 0.0,
    "pool_batches": 0,
    "lr_schedule": "cosine",
    "lr_steps": (0.4, 0.8),
    "student_optimizer": "sgd",
    "student_first": False,
    "dafl_log10": False,
    "inversion_target": "pixels",
    "inversion_every": 1,
    "cmi_weight": 0.0,
    "cmi_temperature": 0.1,
    "cmi_bank": 4096,
    "cmi_negatives": 1024,
    "cmi_head_dim": 128,
    "cmi_adv": 0.0,
    "cmi_features": "penultimate",
    "diversity": 0.0,
    "replay": 0.0,
    "replay_batches": 50,
}


@dataclass
class TeacherConfig:
    model: str = "cnn_base"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"
    # random shifts of the training images by up to the data set's ``augment_pad`` pixels; the
    # digits and shapes recipes turn them off (a teacher that does not mind where a digit sits lets
    # the generator put it anywhere: data/bench/tuning/teacher_shifts/ and shapes_teacher/)
    shifts: bool = True

    def __post_init__(self):
        validate(self)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- validation
#: Allowed range per numeric setting: (lowest, highest, lowest included, highest included); None = open.
_RANGES: dict[str, tuple] = {
    "iters": (1, None, True, True),
    "batch_size": (1, None, True, True),
    "g_steps": (1, None, True, True),
    "s_steps": (1, None, True, True),
    "lr_student": (0, None, False, True),
    "momentum": (0, 1, True, False),
    "weight_decay": (0, None, True, True),
    "warmup_frac": (0, 1, True, False),
    "lr_generator": (0, None, False, True),
    "nz": (1, None, True, True),
    "ngf": (1, None, True, True),
    "adv_warmup": (0, 1, True, False),
    "alpha": (0, None, True, True),
    "beta": (0, None, True, True),
    "gamma": (0, None, True, True),
    "eta": (0, None, True, True),
    "temperature": (0, None, False, True),
    "dafl_onehot": (0, None, True, True),
    "dafl_activation": (0, None, True, True),
    "dafl_entropy": (0, None, True, True),
    "kd_temperature": (0, None, False, True),
    "prior_tv": (0, None, True, True),
    "prior_l2": (0, None, True, True),
    "jitter": (0, 64, True, True),
    "inversion_steps": (1, None, True, True),
    "inversion_lr": (0, None, False, True),
    "bn_first_weight": (0, None, True, True),
    "diversity": (0, None, True, True),
    "replay": (0, 1, True, False),
    "replay_batches": (1, None, True, True),
    "adi_weight": (0, None, True, True),
    "pool_batches": (0, None, True, True),
    "inversion_every": (1, None, True, True),
    "cmi_weight": (0, None, True, True),
    "cmi_temperature": (0, None, False, True),
    "cmi_bank": (1, None, True, True),
    "cmi_negatives": (0, None, True, True),
    "cmi_head_dim": (1, None, True, True),
    "cmi_adv": (0, None, True, True),
    "eval_every": (1, None, True, True),
    "log_every": (1, None, True, True),
    "ckpt_every": (1, None, True, True),
    "seed": (0, 2**32 - 1, True, True),
    "epochs": (1, None, True, True),
    "lr": (0, None, False, True),
}
_CHOICES: dict[str, tuple] = {
    "input_source": ("generator", "inversion", "noise", "data"),
    "kd_loss": ("kl", "l1"),
    "bn_reduce": ("sum", "mean"),
    "lr_schedule": ("cosine", "step", "constant"),
    "student_optimizer": ("sgd", "adam"),
    "inversion_target": ("pixels", "generator"),
    "cmi_features": ("bn_inputs", "penultimate"),
}


def _coerce(name: str, kind, value):
    """``value`` as the field's type, or a sentence saying why it cannot be (None if it can)."""
    if kind in (bool, "bool"):
        if isinstance(value, bool):
            return value, None
        return value, f"{name} must be true or false, not {value!r}"
    if kind in (int, "int"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return value, f"{name} must be a whole number, not {value!r}"
        try:
            number = float(value) if isinstance(value, str) else value
            if not float(number).is_integer():
                raise ValueError
            return int(number), None
        except (ValueError, OverflowError):
            return value, f"{name} must be a whole number, not {value!r}"
    if kind in (float, "float"):
        if isinstance(value, bool):
            return value, f"{name} must be a number, not {value!r}"
        try:  # YAML 1.1 reads 1e-4 as a string: accept every spelling Python's float() accepts
            number = float(value)
        except (TypeError, ValueError):
            return value, f"{name} must be a number, not {value!r}"
        if number != number or number in (float("inf"), float("-inf")):
            return value, f"{name} must be a finite number, not {value!r}"
        return number, None
    if kind in (str, "str"):
        if not isinstance(value, str):
            return value, f"{name} must be text, not {value!r}"
        return value, None
    if kind in (tuple, "tuple"):
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            return (
                value,
                f"{name} must be a pair of numbers like [0.5, 0.999], not {value!r}",
            )
        out = []
        for v in value:
            v2, problem = _coerce(name, float, v)
            if problem:
                return (
                    value,
                    f"{name} must be a pair of numbers like [0.5, 0.999], not {value!r}",
                )
            out.append(v2)
        return tuple(out), None
    return value, None


def _in_range(name: str, value) -> Optional[str]:
    if name in _CHOICES and value not in _CHOICES[name]:
        return f"{name} must be one of {', '.join(_CHOICES[name])}, not {value!r}"
    if name not in _RANGES or isinstance(value, (str, bool)):
        return None
    lo, hi, lo_in, hi_in = _RANGES[name]
    below = lo is not None and (value < lo if lo_in else value <= lo)
    above = hi is not None and (value > hi if hi_in else value >= hi)
    if below or above:
        left = "(-inf" if lo is None else ("[" if lo_in else "(") + f"{lo:g}"
        right = "inf)" if hi is None else f"{hi:g}" + ("]" if hi_in else ")")
        return f"{name} must be in {left}, {right}, not {value!r}"
    return None


def validate(settings) -> None:
    """Type and range of every field of a config dataclass, with YAML-style strings coerced
    (``"1e-4"`` becomes 0.0001). Raises one :class:`CpscError` that lists every problem."""
    problems = []
    for f in dataclasses.fields(settings):
        value, problem = _coerce(f.name, f.type, getattr(settings, f.name))
        problem = problem or _in_range(f.name, value)
        if problem:
            problems.append(problem)
        else:
            setattr(settings, f.name, value)
    if settings.__class__.__name__ == "DistillConfig" and not problems:
        b1, b2 = settings.generator_betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            problems.append(
                f"generator_betas must be two numbers in [0, 1), not {list(settings.generator_betas)}"
            )
        s1, s2 = settings.lr_steps
        if not 0 < s1 <= s2 < 1:
            problems.append(
                f"lr_steps must be two fractions of the run with 0 < first <= second < 1, "
                f"not {list(settings.lr_steps)}"
            )
    if problems:
        raise CpscError(
            "Invalid setting"
            + ("s" if len(problems) > 1 else "")
            + ": "
            + "; ".join(problems)
            + ". Fix the value in --set KEY=VALUE, the flag or the config file."
        )


#: Methods are presets of the one distillation loop: a name maps to config changes.
#: ``cpsc`` is the default config itself.
_NO_CPSC_TERMS = dict(
    use_ikd=False, use_bn=False, use_scl=False, teacher_ce=False, student_ce=False
)

METHODS: dict[str, dict] = {
    "cpsc": {},
    # Baselines: the same loop with other switches.
    # DFAD and DAFL: each method's own generator objective, generator optimiser and step order; the
    # student's optimiser and schedule are the benchmark's (the same for every method: SGD 0.1,
    # cosine), so a quick-profile table compares how the transfer set is made. configs/*.yaml give
    # each method its full published recipe at CIFAR scale (a `methods:` section, BASELINE_SETTINGS).
    # Measured on digits, seed 0, 300 iterations (data/bench/README.md): the published MNIST student
    # settings (DFAD SGD 0.01 constant; DAFL Adam 2e-3) gave 54 % and 24 %, DAFL's MNIST generator lr
    # 0.2 collapses our generator (25 % with our student).
    # DFAD (Fang et al. 2019, DFAD_mnist.py): 5 student steps, then 1 generator step maximising the
    # L1 logit distance; generator Adam 1e-3 with default betas; nz 100.
    "dfad": dict(
        _NO_CPSC_TERMS,
        conditional=False,
        kd_loss="l1",
        adv_warmup=0.0,
        student_first=True,
        lr_generator=1e-3,
        generator_betas=(0.9, 0.999),
        nz=100,
    ),
    # DAFL (Chen et al. 2019, DAFL-train.py): one-hot 1, information entropy 5 (log10), activation 0.1
    # (its MNIST weights), generator Adam with default betas and no schedule, nz 100; generator lr 1e-3
    # (the DataFree toolbox's DAFL script) because the MNIST 0.2 collapses our generator.
    "dafl": dict(
        _NO_CPSC_TERMS,
        conditional=False,
        use_adv=False,
        use_dafl=True,
        dafl_onehot=1.0,
        dafl_entropy=5.0,
        dafl_activation=0.1,
        dafl_log10=True,
        lr_generator=1e-3,
        generator_betas=(0.9, 0.999),
        generator_cosine=False,
        nz=100,
    ),
    # DeepInversion (Yin et al. 2020): batches of optimised pixels in a pool, KD from the pool (no
    # generator). Quick profile: 50 Adam steps per batch at lr 0.1, the BN prior averaged over layers
    # with weight 1. The published CIFAR-10 script (2000 steps, lr 0.05, 10 x the BN prior summed over
    # layers, jitter 2) left the teacher's CE at 6.4 (12 % agreement) after 50 steps on the digits
    # teacher: `--set inversion_steps=2000 --set inversion_lr=0.05 --set beta=10 --set bn_reduce=sum`.
    "deepinv": dict(
        _NO_CPSC_TERMS,
        input_source="inversion",
        use_adv=False,
        use_bn=True,
        teacher_ce=True,
        eta=1.0,
        beta=1.0,
        bn_reduce="mean",
        jitter=1,
        prior_tv=1e-3,
        inversion_steps=50,
        inversion_lr=0.1,
        pool_batches=100000,
    ),
    # CMI (Fang et al. 2021; zju-vipa/DataFree, datafree/synthesis/contrastive.py): for every batch a freshly
    # initialised unconditional generator and its inputs z are optimised (Adam 1e-3, betas (0.5, 0.999)) on
    # BN prior + CE to random target labels + 0.5 x the adversarial term + 0.8 x the instance contrast
    # (temperature 0.1); the lowest-loss images go to the pool and to the memory bank. Quick profile: 30
    # steps per batch (published: 200), a batch every 4 iterations (published: every 80), the BN prior
    # averaged over layers; the contrast on CMI's own features (the spatial means of every teacher BN
    # layer's input; 0.5.0 used the teacher's penultimate features: `cmi:cmi_features=penultimate`).
    "cmi": dict(
        _NO_CPSC_TERMS,
        input_source="inversion",
        inversion_target="generator",
        conditional=False,
        use_adv=False,
        use_bn=True,
        teacher_ce=True,
        eta=1.0,
        beta=1.0,
        bn_reduce="mean",
        cmi_weight=0.8,
        cmi_temperature=0.1,
        cmi_adv=0.5,
        inversion_steps=30,
        inversion_every=4,
        lr_generator=1e-3,
        generator_betas=(0.5, 0.999),
        jitter=1,
        pool_batches=100000,
    ),
    # A conditional generator trained with the BN prior and CE only (CPSC without its adversarial,
    # contrastive and IKD terms; the `deepinv` row of cpsc-lite 0.1/0.2).
    "bn_ce": dict(_NO_CPSC_TERMS, use_adv=False, use_bn=True, teacher_ce=True),
    "noise": dict(_NO_CPSC_TERMS, input_source="noise", use_adv=False),
    "data": dict(_NO_CPSC_TERMS, input_source="data", use_adv=False),
    # Ablations of CPSC-DFKD: one idea removed at a time.
    "cpsc_no_cond": dict(conditional=False),
    "cpsc_no_ce": dict(teacher_ce=False, student_ce=False),
    "cpsc_no_scl": dict(use_scl=False),
    "cpsc_no_bn": dict(use_bn=False),
    "cpsc_no_ikd": dict(use_ikd=False),
    # The paper's reference weights, which the defaults above change for short runs.
    "cpsc_paper": dict(
        alpha=5.0,
        gamma=0.7,
        eta=0.7,
        student_ce=True,
        adv_warmup=0.0,
        lr_generator=1e-3,
        bn_reduce="sum",
        warmup_frac=1 / 60,  # ten epochs of the paper's 600
    ),
    # What the authors' published code does: the paper's weights plus every quirk of that code.
    "reference_compat": dict(
        alpha=5.0,
        gamma=0.7,
        eta=0.7,
        student_ce=True,
        adv_warmup=0.0,
        lr_generator=1e-3,
        bn_reduce="sum",
        warmup_frac=1 / 60,  # ten epochs of the paper's 600
        ce_on_softmax=True,
        generator_adam_reset=True,
        ikd_authors_form=True,
        report_best=True,
    ),
}

METHOD_HELP: dict[str, str] = {
    "cpsc": "CPSC-DFKD: conditional generator, pseudo-supervised CE, teacher/student contrast, BN prior, KL+IKD",
    "dfad": "DFAD (Fang et al. 2019): unconditional generator maximises the L1 teacher/student discrepancy; "
    "student steps first; its own optimiser settings",
    "dafl": "DAFL (Chen et al. 2019): non-adversarial generator with one-hot, activation and log10 entropy "
    "losses; its own optimiser settings",
    "deepinv": "DeepInversion (Yin et al. 2020): batches of pixels optimised with CE, BN prior and priors, "
    "kept in a pool the student learns from by KD",
    "cmi": "CMI (Fang et al. 2021): a generator re-initialised per batch inverts the teacher with BN prior, CE, "
    "an adversarial term and an instance contrast against a memory bank; images kept in a pool",
    "bn_ce": "conditional generator trained with the BN prior and teacher CE only (no adversary, no contrast)",
    "noise": "KD on Gaussian-noise images (lower bound)",
    "data": "KD on the real training images (upper bound; the only method that reads them)",
    "cpsc_no_cond": "ablation: unconditional generator (pseudo labels = teacher's argmax)",
    "cpsc_no_ce": "ablation: no pseudo-supervised CE",
    "cpsc_no_scl": "ablation: no teacher/student contrast",
    "cpsc_no_bn": "ablation: no BN-statistics prior",
    "cpsc_no_ikd": "ablation: no IKD logit term",
    "cpsc_paper": "CPSC-DFKD as in the paper: IKD weight 5, contrast weight 0.7, student CE on, "
    "adversarial from the start, generator lr 1e-3, BN prior summed over layers, student warm-up 1/60",
    "reference_compat": "CPSC-DFKD as the authors' published code runs it: paper weights, CE on softmax outputs, "
    "a generator Adam re-created every step, their IKD form, best accuracy reported",
}


#: The baselines' own published settings at CIFAR scale, for config files (``methods: cifar10``).
#: Kept from the file: the budget (iters, batch size). Sources (read in the authors' code):
#: DFAD: VainF/Data-Free-Adversarial-Distillation, DFAD_cifar.py and README (5 student steps, then
#: 1 generator step; SGD 0.1, weight decay 5e-4; generator Adam 1e-3; both x 0.1 at epochs 100 and
#: 200 of 500; nz 256; CIFAR-100 changes only the data set). DAFL: huawei-noah/Efficient-Computing,
#: DAFL/DAFL-train.py and README (generator Adam 0.02, default betas, constant; student SGD 0.1,
#: weight decay 5e-4, x 0.1 at epochs 800 and 1600 of 2000; one-hot / entropy (log10) / activation
#: weights 0.05 / 5 / 0.01 on CIFAR-10 and 0.5 / 20 / 0.1 on CIFAR-100; nz 1000; one G and one S
#: update per batch, here 5 S steps as in the DataFree toolbox's DAFL script). DeepInversion:
#: zju-vipa/DataFree, scripts/deepinv (1000 Adam steps per batch at lr 0.1, BN prior x 10 summed
#: over layers, CE x 1, competition x 1, TV 1e-3, jitter 4 pixels and flips; that script then trains
#: the student 400 steps per synthesised batch: add `s_steps: 400` and a budget to match). CMI:
#: zju-vipa/DataFree, scripts/cmi (200 steps per batch at lr 1e-3, adv 0.5, BN 1, CE 1, contrast 0.8 at
#: temperature 0.1, bank 40960 with 4096 negatives, a 256-d head; also 400 student steps per batch).
_DFAD_CIFAR = dict(
    g_steps=1,
    s_steps=5,
    student_first=True,
    lr_student=0.1,
    momentum=0.9,
    weight_decay=5e-4,
    student_optimizer="sgd",
    lr_schedule="step",
    lr_steps=(0.2, 0.4),
    warmup_frac=0.0,
    lr_generator=1e-3,
    generator_betas=(0.9, 0.999),
    generator_cosine=True,
    nz=256,
)
_DAFL_CIFAR = dict(
    g_steps=1,
    s_steps=5,
    lr_student=0.1,
    momentum=0.9,
    weight_decay=5e-4,
    student_optimizer="sgd",
    lr_schedule="step",
    lr_steps=(0.4, 0.8),
    warmup_frac=0.0,
    lr_generator=0.02,
    generator_betas=(0.9, 0.999),
    generator_cosine=False,
    nz=1000,
)
_CMI_CIFAR = dict(
    inversion_steps=200,
    lr_generator=1e-3,
    generator_betas=(0.5, 0.999),
    beta=1.0,
    bn_reduce="sum",
    eta=1.0,
    cmi_adv=0.5,
    cmi_weight=0.8,
    cmi_temperature=0.1,
    cmi_bank=40960,
    cmi_negatives=4096,
    cmi_head_dim=256,
    jitter=4,
    flip=True,
    nz=256,
    ngf=64,
)
_DEEPINV_CIFAR = dict(
    inversion_steps=1000,
    inversion_lr=0.1,
    beta=10.0,
    bn_reduce="sum",
    eta=1.0,
    adi_weight=1.0,
    prior_tv=1e-3,
    jitter=4,
    flip=True,
)
BASELINE_SETTINGS: dict[str, dict] = {
    "cifar10": dict(
        dfad=_DFAD_CIFAR,
        deepinv=_DEEPINV_CIFAR,
        cmi=_CMI_CIFAR,
        dafl=dict(
            _DAFL_CIFAR, dafl_onehot=0.05, dafl_entropy=5.0, dafl_activation=0.01
        ),
    ),
    "cifar100": dict(
        dfad=_DFAD_CIFAR,
        deepinv=_DEEPINV_CIFAR,
        cmi=_CMI_CIFAR,
        dafl=dict(_DAFL_CIFAR, dafl_onehot=0.5, dafl_entropy=20.0, dafl_activation=0.1),
    ),
}

#: Methods whose own published schedule differs from CPSC's: a config file used with one of them
#: should say, in its ``methods:`` section, which settings that method takes at its scale.
OWN_SCHEDULE = ("dfad", "dafl", "deepinv", "cmi")


def make_config(
    method: str = "cpsc", base: Optional[dict] = None, **overrides
) -> DistillConfig:
    """Config for ``method``: defaults, then ``base`` (e.g. a YAML file), then the method's preset,
    then ``base["methods"][method]`` (that method's own settings at the file's scale), then the
    settings of a variant (``method`` written ``NAME:KEY=VALUE[:KEY=VALUE...]``, see
    :func:`method_variant`), then overrides.

    A config file names CPSC's schedule at its scale; its ``methods:`` section gives the other
    methods theirs (e.g. ``methods: {dafl: {lr_generator: 0.02, dafl_onehot: 0.05}}``), so
    ``--config c10_... --method dafl`` runs DAFL's CIFAR-10 settings, not CPSC's 6:5 schedule.
    ``methods: cifar10`` (or ``cifar100``) names the published settings in :data:`BASELINE_SETTINGS`.
    """
    method, variant = method_variant(method)
    if method not in METHODS:
        raise CpscError(
            f"Unknown method {method!r}. Choose one of: {', '.join(METHODS)}."
        )
    base, overrides = renamed_settings(dict(base or {})), renamed_settings(overrides)
    per_method = base.pop("methods", None) or {}
    if isinstance(per_method, str):
        if per_method not in BASELINE_SETTINGS:
            raise CpscError(
                f"The config's `methods: {per_method}` names no known set of baseline settings. "
                f"Use one of {', '.join(BASELINE_SETTINGS)}, or a mapping such as "
                "`methods: {dafl: {lr_generator: 0.02}}`."
            )
        per_method = BASELINE_SETTINGS[per_method]
    if not isinstance(per_method, dict) or not all(
        isinstance(v, dict) for v in per_method.values()
    ):
        raise CpscError(
            "The config's `methods:` section must map method names to settings, e.g. "
            "`methods: {dafl: {lr_generator: 0.02}}`."
        )
    unknown = sorted(set(per_method) - set(METHODS))
    if unknown:
        raise CpscError(
            f"The config's `methods:` section names unknown method(s) {', '.join(unknown)}. "
            f"Choose from: {', '.join(METHODS)}."
        )
    if base and method in OWN_SCHEDULE and method not in per_method:
        import warnings

        warnings.warn(
            f"The config file has no `methods: {{{method}: ...}}` section, so {method} runs with the "
            f"file's schedule (written for CPSC) and the settings of its preset for the built-in digits. "
            f"Add that section with {method}'s settings at this scale (the shipped configs/*.yaml have "
            "one).",
            stacklevel=2,
        )
    d = DistillConfig().to_dict()
    d.update(base)
    d.update(METHODS[method])
    d.update(per_method.get(method, {}))
    d.update(renamed_settings(variant))
    d.update({k: v for k, v in overrides.items() if v is not None})
    d["method"] = method
    # validated on construction (types, ranges, choices)
    return DistillConfig.from_dict(d)


def method_variant(spec: str) -> tuple[str, dict]:
    """A method with some settings changed, as one name: ``"reference_compat:ce_on_softmax=false"``
    -> ``("reference_compat", {"ce_on_softmax": False})``; a plain name gives ``(name, {})``.

    The benchmark takes such names in ``--methods`` (one row each, named by the whole spec), so
    that one table can hold a method and its variants, e.g. the authors' code with one quirk fixed.
    """
    name, *pairs = [part.strip() for part in spec.split(":")]
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise CpscError(
                f"Cannot read {pair!r} in the method {spec!r}: write a variant as "
                "NAME:KEY=VALUE[:KEY=VALUE...], e.g. reference_compat:ce_on_softmax=false."
            )
        settings[key.strip()] = parse_value(value.strip())
    return name, settings


def parse_value(text: str):
    """``KEY=VALUE`` command-line values: booleans, numbers, lists, else strings (YAML rules;
    the validator then reads number-like strings such as ``1e-4`` as numbers)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise CpscError(
            f"Cannot read the value {text!r}: {problem}. Write numbers, true/false, text, or a "
            "list like [0.5, 0.999]."
        ) from None


def presets_dir():
    """The folder of the shipped presets: ``cpsc_lite/presets`` in an installed package, or the
    repository's ``configs/`` in a checkout (also an editable install); None if neither exists."""
    from pathlib import Path

    here = Path(__file__).resolve().parent
    for folder in (here / "presets", here.parent / "configs"):
        if folder.is_dir() and any(folder.glob("*.yaml")):
            return folder
    return None


def available_presets() -> dict:
    """Preset name -> its YAML file, for every shipped preset."""
    folder = presets_dir()
    return (
        {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder is not None else {}
    )


def resolve_config(spec: str) -> str:
    """``--config``: a YAML file, or the name of a shipped preset (``c10_wrn40_2_wrn16_2_fast``)."""
    import os

    if os.path.isfile(os.path.expanduser(spec)):
        return os.path.expanduser(spec)
    presets = available_presets()
    name = os.path.basename(spec)
    name = name[:-5] if name.endswith(".yaml") else name
    if name in presets and (
        spec == name or spec.endswith(os.path.join("configs", name + ".yaml"))
    ):
        # a preset name, or configs/NAME.yaml typed outside the checkout
        return str(presets[name])
    known = ", ".join(presets) or "(none found in this installation)"
    raise CpscError(
        f"Config file {spec} does not exist, and it is not the name of a shipped preset. Pass the "
        f"path of a YAML file or one of: {known} (listed by `cpsc-lite presets`)."
    )


def load_yaml(path: str) -> dict:
    import yaml

    path = resolve_config(path)
    try:
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CpscError(
            f"Config file {path} is not valid YAML text ({exc.__class__.__name__}: "
            f"{' '.join(str(exc).split())[:300]}). Pass a YAML file of key: value lines, or a preset "
            "name (`cpsc-lite presets`)."
        ) from None
    except OSError as exc:
        raise CpscError(
            f"Cannot read the config file {path}: {exc.strerror}."
        ) from None
    if not isinstance(d, dict):
        raise CpscError(
            f"Config file {path} must hold a mapping of settings (key: value lines)."
        )
    return d


#: Keys a preset YAML may hold besides DistillConfig's: defaults for the command line.
RUN_KEYS = ("dataset", "teacher_model")


def load_preset(path: str) -> tuple[dict, dict]:
    """A ``configs/*.yaml`` file split into ``(DistillConfig settings, run settings)``.

    Run settings are :data:`RUN_KEYS` (``dataset``, ``teacher_model``), which the command
    line uses as defaults for ``--dataset`` and ``--teacher-model``; ``student`` is a
    DistillConfig setting already.
    """
    settings = load_yaml(path)
    run = {k: settings.pop(k) for k in RUN_KEYS if k in settings}
    return settings, run
