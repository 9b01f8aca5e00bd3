"""The settings of a run, in sections: what a distillation run does is one :class:`DistillConfig`,
so an ablation is a different config, never a code edit (book chapter 7).

A section per concern (the budget, the optimisers, the generator, the loss terms, one per
baseline that needs its own settings, logging). Every loss term is a weight and a weight of 0 turns
the term off. A method (:mod:`cpsc_lite.methods`) is a preset of these settings;
:func:`cpsc_lite.methods.make_config` builds the config of one.

On the command line and in YAML files a setting is named by its dotted path (``objective.gamma``,
``cmi.weight``) or, for the main sections, by its own name (``gamma``, ``iters``); older names
still work (:mod:`cpsc_lite.compat`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field
from typing import Optional

from . import CpscError, compat


@dataclass
class Budget:
    """How much a run trains: ``iters`` iterations of ``g_steps`` generator updates, then
    ``s_steps`` student updates (the student's first when ``student_first``: DFAD's order), each on
    a fresh batch of ``batch_size`` (the global batch on several GPUs). The defaults are the quick
    CPU profile for the built-in digits; ``configs/*.yaml`` hold the paper's full-scale schedules."""

    iters: int = 600
    batch_size: int = 128
    g_steps: int = 1
    s_steps: int = 5
    student_first: bool = False


@dataclass
class Optimisers:
    """The student's SGD (or Adam) with a linear warm-up over ``warmup_frac`` of the run, then
    ``lr_schedule``: "cosine", "step" (x 0.1 at each fraction in ``lr_steps``) or "constant"; the
    generator's Adam, whose rate follows the same schedule when ``generator_cosine``.

    Quick profile: the warm-up is 10 % of the run (paper: 1/60) and the generator's rate 1e-2
    (paper: 1e-3, which needs thousands of steps before the teacher recognises the conditioning
    class with one persistent Adam: book chapter 4). How these were chosen: the book's appendix."""

    lr_student: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_frac: float = 0.1
    lr_schedule: str = "cosine"
    lr_steps: tuple = (0.4, 0.8)
    student_optimizer: str = "sgd"
    lr_generator: float = 1e-2
    generator_betas: tuple = (0.5, 0.999)
    generator_cosine: bool = True


@dataclass
class GeneratorSettings:
    """The generator G(z, y): noise size ``nz``, width ``ngf`` (the paper's 64 at 32x32; 32 is
    ample for tiny images), class-conditional or not. ``replay``: this share of every student
    batch comes from a pool of the last ``replay_batches`` batches the student learnt from
    (generative pseudo replay, Binici et al. 2022); 0 = every batch fresh, as in the paper."""

    nz: int = 256
    ngf: int = 32
    conditional: bool = True
    replay: float = 0.0
    replay_batches: int = 50


@dataclass
class Objective:
    """The weights of the loss terms (0 turns a term off) and their forms.

    CPSC-DFKD (paper Sec. 3): L_G = -adv * KL - alpha * IKD + beta * L_BN + gamma * L_SCL + eta * CE
    and L_S = KL + alpha * IKD + eta_student * CE + gamma_student * L_SCL. The paper's weights are
    alpha 5, beta 1, gamma 0.7, eta 0.7 with the student's CE at 0.7 (``cpsc_paper``); the quick
    profile changes them for runs of a few hundred iterations (the book's appendix says how they
    were chosen). DeepInversion and CMI reuse the BN prior and the CE; the image priors, the
    augmented views and MSGAN's diversity are extras any generator or inversion may add.
    """

    # the adversarial term: the generator maximises the teacher/student distance (CPSC: KL;
    # DFAD: mean |t - s|), switched on after adv_warmup of the run
    adv: float = 1.0
    adv_warmup: float = 0.3
    alpha: float = 1.0  # IKD, the extra logit-matching term
    beta: float = 1.0  # the BN-statistics prior
    gamma: float = 0.2  # the teacher/student contrast (SupCon)
    eta: float = 1.0  # the pseudo-supervised CE of the teacher, trains G
    eta_student: float = 0.0  # the student's CE against the conditioning label
    gamma_student: float = (
        0.0  # the contrast in the student's loss too (authors' code: 0)
    )
    temperature: float = 0.07  # SupCon's tau
    ikd_log: bool = True  # G maximises log MSE (a bounded push) rather than MSE
    ikd_student_log: bool = (
        False  # S minimises log ||t - s||_2 (authors' CIFAR-10 form)
    )
    bn_reduce: str = (
        "mean"  # the BN prior "sum"med over the teacher's layers (paper) or "mean"
    )
    bn_first_weight: float = 1.0  # weight of the first BN layer in that prior
    prior_tv: float = 0.0  # DeepInversion's total-variation prior on the images
    prior_l2: float = 0.0  # its L2 prior (mean squared normalised pixel)
    jitter: int = 0  # random shift of the teacher's view by up to this many pixels
    flip: bool = False  # random horizontal flip of the teacher's view
    diversity: float = 0.0  # MSGAN's mode-seeking term (Mao et al. 2019)


@dataclass
class Inversion:
    """Methods that optimise each batch from scratch (DeepInversion, CMI): ``steps`` Adam steps per
    batch (DeepInversion: on the pixels, at ``lr``), a new batch every ``every`` iterations, kept
    in a pool of ``pool_batches`` batches that the student learns from; ``adi``: Adaptive
    DeepInversion's competition with the student (0 = plain DeepInversion)."""

    steps: int = 200
    lr: float = 0.05
    every: int = 1
    pool_batches: int = 0
    adi: float = 0.0


@dataclass
class CMISettings:
    """CMI (Fang et al. 2021): instance contrast of weight ``weight`` at ``temperature`` between each
    image's local and global view, through a projection head of ``head_dim`` on ``features`` (the
    channel means of every teacher BN layer's input, "bn_inputs", or its "penultimate" features),
    against ``negatives`` entries of a memory bank of ``bank`` earlier images; ``adv``: the
    teacher/student KL of the images both classify alike, maximised."""

    weight: float = 0.8
    temperature: float = 0.1
    bank: int = 4096
    negatives: int = 1024
    head_dim: int = 128
    adv: float = 0.5
    features: str = "bn_inputs"


@dataclass
class DAFLSettings:
    """DAFL (Chen et al. 2019): weights of its three generator losses (confident one-hot
    predictions, large feature activations, balanced classes); ``log10``: its published code takes
    the information entropy with log10."""

    onehot: float = 1.0
    activation: float = 0.1
    entropy: float = 5.0
    log10: bool = True


@dataclass
class AuthorsCode:
    """Quirks of the authors' published code (``reference_compat`` turns them all on; book chapter 7):
    CE on softmax outputs, a generator Adam re-created at every step, the IKD in their
    dataset-dependent form (CIFAR-10: G -log MSE, S log ||t - s||_2; elsewhere -MSE / MSE), and the
    best test accuracy seen reported instead of the final one."""

    ce_on_softmax: bool = False
    generator_adam_reset: bool = False
    ikd_authors_form: bool = False
    report_best: bool = False


@dataclass
class Logging:
    """Bookkeeping: test accuracy (and, with ``diagnostics``, diversity, balance and FID of the
    synthetic images) every ``eval_every`` iterations, a log line every ``log_every`` (also as
    TensorBoard events in ``tensorboard/`` when ``tensorboard`` and the package are there), a
    checkpoint every ``ckpt_every``, and every ``samples_every`` iterations (0 = never) a grid of
    samples in ``samples/`` and the curves so far in curves.png."""

    eval_every: int = 100
    diagnostics: bool = True
    log_every: int = 10
    ckpt_every: int = 100
    tensorboard: bool = True
    samples_every: int = 0


#: Section name -> its dataclass, in the order a config file lists them.
SECTIONS: dict[str, type] = {
    "budget": Budget,
    "optim": Optimisers,
    "generator": GeneratorSettings,
    "objective": Objective,
    "inversion": Inversion,
    "cmi": CMISettings,
    "dafl": DAFLSettings,
    "authors": AuthorsCode,
    "log": Logging,
}
#: Settings outside the sections.
TOP_LEVEL = ("method", "student", "seed", "device")


@dataclass
class DistillConfig:
    method: str = "cpsc"
    student: str = "cnn_small"
    seed: int = 0
    device: str = "auto"
    budget: Budget = field(default_factory=Budget)
    optim: Optimisers = field(default_factory=Optimisers)
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)
    objective: Objective = field(default_factory=Objective)
    inversion: Inversion = field(default_factory=Inversion)
    cmi: CMISettings = field(default_factory=CMISettings)
    dafl: DAFLSettings = field(default_factory=DAFLSettings)
    authors: AuthorsCode = field(default_factory=AuthorsCode)
    log: Logging = field(default_factory=Logging)

    def __post_init__(self):
        for name, kind in SECTIONS.items():
            if isinstance(getattr(self, name), dict):
                setattr(self, name, kind(**getattr(self, name)))
        validate(self)

    def to_dict(self) -> dict:
        """Nested: ``{"method": ..., "budget": {"iters": ...}, ...}`` (what state.pt and metrics.json hold)."""
        d = asdict(self)
        d["optim"]["generator_betas"] = list(self.optim.generator_betas)
        d["optim"]["lr_steps"] = list(self.optim.lr_steps)
        return d

    def flat(self) -> dict:
        """Every setting by its dotted path (``"objective.gamma": 0.2``; top-level names as they are)."""
        return flatten(self.to_dict())

    def replace(self, **changes) -> "DistillConfig":
        """A copy with ``changes``, each named as on the command line (``iters=5``, ``gamma=0``,
        ``cmi_weight=1``) or by dotted path passed as a dict: ``replace(**{"cmi.weight": 1})``."""
        values = self.flat()
        values.update(canonical(changes, values))
        return DistillConfig.from_flat(values)

    @classmethod
    def from_flat(cls, values: dict) -> "DistillConfig":
        """From ``{dotted path: value}`` holding every setting (:meth:`flat`'s layout)."""
        return cls.from_dict(nest(values))

    @classmethod
    def from_dict(cls, d: dict, saved: bool = False) -> "DistillConfig":
        """From a nested dict (:meth:`to_dict`), or a flat one of an older version (its names and
        switches translated by :mod:`cpsc_lite.compat`); every setting not given takes its default."""
        values = flatten(DistillConfig().to_dict())
        values.update(canonical(d, values, saved=saved))
        return cls(**nest(values))

    @classmethod
    def from_saved(cls, d: dict) -> "DistillConfig":
        """The config stored in a run's state.pt or metrics.json. In a flat one of an older version,
        settings added since take the value the run trained with (a resumed run continues as it
        started: :data:`compat.SETTINGS_ADDED_LATER`)."""
        if not is_nested(d):
            d = dict(d)
            for key, old_value in compat.SETTINGS_ADDED_LATER.items():
                d.setdefault(key, old_value)
        return cls.from_dict(d, saved=True)


# ------------------------------------------------------------ names of settings
def _paths() -> dict[str, tuple[str, str]]:
    """Every dotted path -> (section or "", field name)."""
    out = {name: ("", name) for name in TOP_LEVEL}
    for section, kind in SECTIONS.items():
        for f in dataclasses.fields(kind):
            out[f"{section}.{f.name}"] = (section, f.name)
    return out


PATHS = _paths()
#: Sections whose fields keep their own names on the command line (``gamma`` for ``objective.gamma``).
_PLAIN = ("budget", "optim", "generator", "objective", "authors", "log")
#: Short name -> dotted path, for the settings that have one (the rest are written dotted).
ALIASES: dict[str, str] = {
    **{
        path.split(".")[1]: path
        for path, (section, _) in PATHS.items()
        if section in _PLAIN
    },
    **compat.MOVED_SETTINGS,
}


def is_nested(d: dict) -> bool:
    return any(isinstance(d.get(section), dict) for section in SECTIONS)


def flatten(d: dict) -> dict:
    """``{"budget": {"iters": 5}, "seed": 1}`` -> ``{"budget.iters": 5, "seed": 1}`` (flat keys kept)."""
    out = {}
    for key, value in d.items():
        if key in SECTIONS and isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def nest(values: dict) -> dict:
    """Dotted paths -> the nested layout of :meth:`DistillConfig.to_dict`."""
    out: dict = {section: {} for section in SECTIONS}
    for path, value in values.items():
        section, name = PATHS[path]
        (out[section] if section else out)[name] = value
    return out


def canonical(d: dict, context: Optional[dict] = None, saved: bool = False) -> dict:
    """Settings as written by a user, a YAML file or an older saved run -> ``{dotted path: value}``.

    Accepts dotted paths, sections as mappings, short names and every older name or switch
    (:func:`compat.upgrade`, with ``context`` the values they apply on top of). An unknown name
    is an error that lists the valid ones."""
    d = compat.upgrade(flatten(renamed_settings(dict(d))), context, saved)
    out, unknown = {}, []
    for key, value in d.items():
        path = key if key in PATHS else ALIASES.get(key)
        if path is None:
            unknown.append(key)
        else:
            out[path] = value
    if unknown:
        raise CpscError(
            f"Unknown config keys: {', '.join(sorted(map(str, unknown)))}. Valid keys: "
            f"{', '.join(sorted(ALIASES))}, or any setting by its dotted path "
            f"({', '.join(p for p in PATHS if PATHS[p][0] not in _PLAIN and PATHS[p][0])})."
        )
    return out


def shown_name(path: str) -> str:
    """What a message calls a setting: its short name where it has one, else its dotted path."""
    name = path.split(".")[-1]
    return name if ALIASES.get(name) == path or "." not in path else path


def renamed_settings(d: dict) -> dict:
    """``d`` with the old names of :data:`compat.RENAMED_SETTINGS` replaced; both at once is an error."""
    out = dict(d)
    for old, new in compat.RENAMED_SETTINGS.items():
        if old in out:
            if new in out:
                raise CpscError(
                    f"The settings {old!r} and {new!r} are one setting (renamed to {new!r}); "
                    f"give only {new!r}."
                )
            out[new] = out.pop(old)
    if d.get("use_ce", True) is False:  # use_ce switched both CE terms
        out["student_ce"] = False
    return out


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
    # the generator put it anywhere: book chapter 4)
    shifts: bool = True

    def __post_init__(self):
        validate(self)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- validation
#: Allowed range per numeric setting: (lowest, highest, lowest included, highest included); None = open.
_RANGES: dict[str, tuple] = {
    "budget.iters": (1, None, True, True),
    "budget.batch_size": (1, None, True, True),
    "budget.g_steps": (1, None, True, True),
    "budget.s_steps": (1, None, True, True),
    "optim.lr_student": (0, None, False, True),
    "optim.momentum": (0, 1, True, False),
    "optim.weight_decay": (0, None, True, True),
    "optim.warmup_frac": (0, 1, True, False),
    "optim.lr_generator": (0, None, False, True),
    "generator.nz": (1, None, True, True),
    "generator.ngf": (1, None, True, True),
    "generator.replay": (0, 1, True, False),
    "generator.replay_batches": (1, None, True, True),
    "objective.adv": (0, None, True, True),
    "objective.adv_warmup": (0, 1, True, False),
    "objective.alpha": (0, None, True, True),
    "objective.beta": (0, None, True, True),
    "objective.gamma": (0, None, True, True),
    "objective.eta": (0, None, True, True),
    "objective.eta_student": (0, None, True, True),
    "objective.gamma_student": (0, None, True, True),
    "objective.temperature": (0, None, False, True),
    "objective.bn_first_weight": (0, None, True, True),
    "objective.prior_tv": (0, None, True, True),
    "objective.prior_l2": (0, None, True, True),
    "objective.jitter": (0, 64, True, True),
    "objective.diversity": (0, None, True, True),
    "inversion.steps": (1, None, True, True),
    "inversion.lr": (0, None, False, True),
    "inversion.every": (1, None, True, True),
    "inversion.pool_batches": (0, None, True, True),
    "inversion.adi": (0, None, True, True),
    "cmi.weight": (0, None, True, True),
    "cmi.temperature": (0, None, False, True),
    "cmi.bank": (1, None, True, True),
    "cmi.negatives": (0, None, True, True),
    "cmi.head_dim": (1, None, True, True),
    "cmi.adv": (0, None, True, True),
    "dafl.onehot": (0, None, True, True),
    "dafl.activation": (0, None, True, True),
    "dafl.entropy": (0, None, True, True),
    "log.eval_every": (1, None, True, True),
    "log.log_every": (1, None, True, True),
    "log.ckpt_every": (1, None, True, True),
    "log.samples_every": (0, None, True, True),
    "seed": (0, 2**32 - 1, True, True),
    "momentum": (0, 1, True, False),
    "weight_decay": (0, None, True, True),
    "epochs": (1, None, True, True),
    "batch_size": (1, None, True, True),
    "lr": (0, None, False, True),
}
_CHOICES: dict[str, tuple] = {
    "objective.bn_reduce": ("sum", "mean"),
    "optim.lr_schedule": ("cosine", "step", "constant"),
    "optim.student_optimizer": ("sgd", "adam"),
    "cmi.features": ("bn_inputs", "penultimate"),
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
        pair = f"{name} must be a pair of numbers like [0.5, 0.999], not {value!r}"
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            return value, pair
        out = []
        for v in value:
            v2, problem = _coerce(name, float, v)
            if problem:
                return value, pair
            out.append(v2)
        return tuple(out), None
    return value, None


def _in_range(path: str, name: str, value) -> Optional[str]:
    if path in _CHOICES and value not in _CHOICES[path]:
        return f"{name} must be one of {', '.join(_CHOICES[path])}, not {value!r}"
    if path not in _RANGES or isinstance(value, (str, bool)):
        return None
    lo, hi, lo_in, hi_in = _RANGES[path]
    below = lo is not None and (value < lo if lo_in else value <= lo)
    above = hi is not None and (value > hi if hi_in else value >= hi)
    if below or above:
        left = "(-inf" if lo is None else ("[" if lo_in else "(") + f"{lo:g}"
        right = "inf)" if hi is None else f"{hi:g}" + ("]" if hi_in else ")")
        return f"{name} must be in {left}, {right}, not {value!r}"
    return None


def _check_fields(obj, prefix: str, problems: list) -> None:
    for f in dataclasses.fields(obj):
        if f.name in SECTIONS and prefix == "":
            continue
        path = prefix + f.name
        name = shown_name(path) if prefix or path in PATHS else f.name
        value, problem = _coerce(name, f.type, getattr(obj, f.name))
        problem = problem or _in_range(path, name, value)
        if problem:
            problems.append(problem)
        else:
            setattr(obj, f.name, value)


def validate(settings) -> None:
    """Type and range of every setting of a config dataclass, with YAML-style strings coerced
    (``"1e-4"`` becomes 0.0001). Raises one :class:`CpscError` that lists every problem."""
    problems: list[str] = []
    _check_fields(settings, "", problems)
    device = getattr(settings, "device", "auto")
    if isinstance(device, str) and device_problem(device):
        problems.append(device_problem(device))
    if isinstance(settings, DistillConfig):
        for section in SECTIONS:
            _check_fields(getattr(settings, section), section + ".", problems)
        if not problems:
            b1, b2 = settings.optim.generator_betas
            if not (0 <= b1 < 1 and 0 <= b2 < 1):
                problems.append(
                    "generator_betas must be two numbers in [0, 1), not "
                    f"{list(settings.optim.generator_betas)}"
                )
            s1, s2 = settings.optim.lr_steps
            if not 0 < s1 <= s2 < 1:
                problems.append(
                    "lr_steps must be two fractions of the run with 0 < first <= second < 1, "
                    f"not {list(settings.optim.lr_steps)}"
                )
    if problems:
        raise CpscError(
            "Invalid setting"
            + ("s" if len(problems) > 1 else "")
            + ": "
            + "; ".join(problems)
            + ". Fix the value in --set KEY=VALUE, the flag or the config file."
        )


#: The devices cpsc-lite runs on (torch names others, e.g. xpu, meta or vulkan, that it does not).
DEVICE_NAMES = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")


def device_problem(name: str) -> Optional[str]:
    """Why ``name`` is no device cpsc-lite can run on, or None."""
    if DEVICE_NAMES.match(name or "auto"):
        return None
    return (
        f"device {name!r} is not one cpsc-lite runs on (it uses auto, cpu, cuda, cuda:N or mps; "
        "other PyTorch device types such as xpu, meta or vulkan are not supported)"
    )


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


# ------------------------------------------------------------- files and presets
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


#: Keys a preset YAML may hold besides DistillConfig's: defaults for the command line, and how long
#: a whole experiment (``cpsc-lite demo --preset``) trains its teacher.
RUN_KEYS = ("dataset", "teacher_model", "teacher_epochs")


def load_preset(path: str) -> tuple[dict, dict]:
    """A ``configs/*.yaml`` file split into ``(DistillConfig settings, run settings)``.

    Run settings are :data:`RUN_KEYS` (``dataset``, ``teacher_model``, ``teacher_epochs``), which
    the command line uses as defaults for ``--dataset``, ``--teacher-model`` and the teacher's
    epochs; ``student`` is a DistillConfig setting already.
    """
    settings = load_yaml(path)
    run = {k: settings.pop(k) for k in RUN_KEYS if k in settings}
    return settings, run
