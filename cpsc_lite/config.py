"""One dataclass per run. Every loss term of CPSC-DFKD is a switch with a weight,
so an ablation is a different config, never a code edit (book chapter 7)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, asdict
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
    warmup_frac: float = 0.02
    # Generator optimiser: Adam.
    lr_generator: float = 1e-3
    generator_cosine: bool = True  # decay G's LR with the student's, so late adversarial drift stays small
    generator_betas: tuple = (0.5, 0.999)
    nz: int = 256
    ngf: int = 32                  # the paper uses 64 at 32x32; 32 is ample for tiny images and 4x cheaper
    conditional: bool = True
    # Loss switches and weights. The paper's reference weights (METHOD.md) are alpha=5, beta=1,
    # gamma=0.7, eta=0.7 with student CE on; configs/*.yaml use exactly those. For the quick CPU
    # profile (a few hundred iterations) four defaults differ, because measured runs were better
    # that way (book chapter 7 and data/bench/README.md): alpha=1, gamma=0.2, no student CE, and
    # the adversarial terms off for the first 30 % of the run (adv_warmup).
    use_adv: bool = True        # generator maximises the teacher/student disagreement (-KL)
    # Fraction of the run before the adversarial terms switch on (paper: 0). Early on the student
    # knows nothing, so maximising its disagreement with the teacher only slows the start.
    adv_warmup: float = 0.3
    use_ikd: bool = True
    alpha: float = 1.0          # IKD weight (paper: 5; with -log MSE that push dominates short runs)
    use_bn: bool = True
    beta: float = 1.0           # BN-statistics weight
    use_scl: bool = True
    gamma: float = 0.2          # contrastive weight (paper: 0.7; it narrowed each class in short runs)
    use_ce: bool = True
    eta: float = 0.7            # pseudo-supervised CE weight
    temperature: float = 0.07   # SupCon temperature tau
    # Baselines (presets below switch these): where the student's inputs come from, the
    # distillation distance, and DAFL's generator losses (one-hot, activation, information entropy).
    input_source: str = "generator"  # "generator" | "noise" (Gaussian images) | "data" (real train split)
    kd_loss: str = "kl"              # "kl" | "l1" (DFAD's mean absolute logit difference)
    use_dafl: bool = False
    dafl_onehot: float = 1.0
    dafl_activation: float = 0.1
    dafl_entropy: float = 5.0
    kd_temperature: float = 1.0
    scl_for_student: bool = False  # authors' code: the contrast trains G only
    # Student also learns CE(S(x), y) (paper: on). Off for short runs: the teacher then agrees
    # with the conditioning label y on only 20-50 % of generated images, and CE(S(x), y)
    # trains the student against the teacher it is distilling.
    student_ce: bool = False
    ikd_log: bool = True           # generator uses -log(MSE) (bounded push) rather than -MSE
    ikd_student_log: bool = False  # student uses log ||t - s||_2 (authors' CIFAR-10 form) rather than MSE
    # Image priors and augmentation of the generated images before the teacher sees them in the
    # generator step (DeepInversion, Yin et al. 2020): weight 0 / 0 pixels / false = off.
    bn_reduce: str = "sum"         # "sum" over the teacher's BN layers (paper) or "mean" (one layer's size)
    prior_tv: float = 0.0          # total-variation prior (mean absolute difference of neighbouring pixels)
    prior_l2: float = 0.0          # L2 prior (mean squared value of the normalised image)
    jitter: int = 0                # random shift by up to this many pixels (same shift for the whole batch)
    flip: bool = False             # random horizontal flip (only where mirror images keep their class)
    # The authors' published code, quirk by quirk (all off = the clean method; `reference_compat` turns
    # them all on, book chapter 7): CE on softmax outputs, a generator Adam re-created at every step,
    # IKD in the authors' dataset-dependent form, and the best test accuracy seen as the reported one.
    ce_on_softmax: bool = False
    generator_adam_reset: bool = False
    ikd_authors_form: bool = False  # CIFAR-10: G -log MSE, S log ||t - s||_2; other data sets: -MSE / MSE
    report_best: bool = False       # metrics' "reported_acc" = best evaluation, not the final one
    # Bookkeeping.
    eval_every: int = 100
    diagnostics: bool = True       # diversity / balance / FID of synthetic images at each evaluation
    log_every: int = 10
    ckpt_every: int = 100
    seed: int = 0
    device: str = "auto"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["generator_betas"] = list(self.generator_betas)
        return d

    def replace(self, **changes) -> "DistillConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict) -> "DistillConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CpscError(f"Unknown config keys: {', '.join(unknown)}. Valid keys: {', '.join(sorted(names))}.")
        d = dict(d)
        if "generator_betas" in d:
            d["generator_betas"] = tuple(d["generator_betas"])
        return cls(**d)

    @classmethod
    def from_saved(cls, d: dict) -> "DistillConfig":
        """A config stored in a run's state.pt; settings added since take the value the run trained with."""
        d = dict(d)
        for key, old_value in SETTINGS_ADDED_LATER.items():
            d.setdefault(key, old_value)
        return cls.from_dict(d)


# Settings introduced after runs could already be saved, with the value that reproduces how
# those runs trained (a resumed run must continue as it started, not pick up a new default).
SETTINGS_ADDED_LATER: dict[str, object] = {
    "adv_warmup": 0.0, "ikd_student_log": False, "bn_reduce": "sum", "prior_tv": 0.0, "prior_l2": 0.0,
    "jitter": 0, "flip": False, "ce_on_softmax": False, "generator_adam_reset": False,
    "ikd_authors_form": False, "report_best": False,
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

    def to_dict(self) -> dict:
        return asdict(self)


#: Methods are presets of the one distillation loop: a name maps to config changes.
#: ``cpsc`` is the default config itself.
_NO_CPSC_TERMS = dict(use_ikd=False, use_bn=False, use_scl=False, use_ce=False, student_ce=False)

METHODS: dict[str, dict] = {
    "cpsc": {},
    # Baselines: the same loop with other switches.
    "dfad": dict(_NO_CPSC_TERMS, conditional=False, kd_loss="l1", adv_warmup=0.0),
    "dafl": dict(_NO_CPSC_TERMS, conditional=False, use_adv=False, use_dafl=True),
    "deepinv": dict(_NO_CPSC_TERMS, use_adv=False, use_bn=True, use_ce=True),
    "noise": dict(_NO_CPSC_TERMS, input_source="noise", use_adv=False),
    "data": dict(_NO_CPSC_TERMS, input_source="data", use_adv=False),
    # Ablations of CPSC-DFKD: one idea removed at a time.
    "cpsc_no_cond": dict(conditional=False),
    "cpsc_no_ce": dict(use_ce=False, student_ce=False),
    "cpsc_no_scl": dict(use_scl=False),
    "cpsc_no_bn": dict(use_bn=False),
    "cpsc_no_ikd": dict(use_ikd=False),
    # The paper's reference weights, which the defaults above change for short runs.
    "cpsc_paper": dict(alpha=5.0, gamma=0.7, student_ce=True, adv_warmup=0.0),
    # What the authors' published code does: the paper's weights plus every quirk of that code.
    "reference_compat": dict(alpha=5.0, gamma=0.7, student_ce=True, adv_warmup=0.0, ce_on_softmax=True,
                             generator_adam_reset=True, ikd_authors_form=True, report_best=True),
}

METHOD_HELP: dict[str, str] = {
    "cpsc": "CPSC-DFKD: conditional generator, pseudo-supervised CE, teacher/student contrast, BN prior, KL+IKD",
    "dfad": "DFAD (Fang et al. 2019): unconditional generator maximises the L1 teacher/student discrepancy",
    "dafl": "DAFL (Chen et al. 2019): non-adversarial generator with one-hot, activation and entropy losses",
    "deepinv": "DeepInversion-style (Yin et al. 2020): generator with BN prior and teacher CE, no adversary",
    "noise": "KD on Gaussian-noise images (lower bound)",
    "data": "KD on the real training images (upper bound; the only method that reads them)",
    "cpsc_no_cond": "ablation: unconditional generator (pseudo labels = teacher's argmax)",
    "cpsc_no_ce": "ablation: no pseudo-supervised CE",
    "cpsc_no_scl": "ablation: no teacher/student contrast",
    "cpsc_no_bn": "ablation: no BN-statistics prior",
    "cpsc_no_ikd": "ablation: no IKD logit term",
    "cpsc_paper": "CPSC-DFKD as in the paper: IKD weight 5, contrast weight 0.7, student CE on, "
                  "adversarial from the start",
    "reference_compat": "CPSC-DFKD as the authors' published code runs it: paper weights, CE on softmax outputs, "
                        "a generator Adam re-created every step, their IKD form, best accuracy reported",
}


def make_config(method: str = "cpsc", base: Optional[dict] = None, **overrides) -> DistillConfig:
    """Config for ``method``: defaults, then ``base`` (e.g. a YAML file), then the preset, then overrides."""
    if method not in METHODS:
        raise CpscError(f"Unknown method {method!r}. Choose one of: {', '.join(METHODS)}.")
    d = DistillConfig().to_dict()
    d.update(base or {})
    d.update(METHODS[method])
    d.update({k: v for k, v in overrides.items() if v is not None})
    d["method"] = method
    cfg = DistillConfig.from_dict(d)
    if cfg.input_source not in ("generator", "noise", "data"):
        raise CpscError(f"input_source must be generator, noise or data, not {cfg.input_source!r}.")
    if not 0.0 <= cfg.adv_warmup < 1.0:
        raise CpscError(f"adv_warmup is a fraction of the run in [0, 1), not {cfg.adv_warmup}.")
    if cfg.bn_reduce not in ("sum", "mean"):
        raise CpscError(f"bn_reduce must be sum or mean, not {cfg.bn_reduce!r}.")
    if cfg.kd_loss not in ("kl", "l1"):
        raise CpscError(f"kd_loss must be kl or l1, not {cfg.kd_loss!r}.")
    return cfg


def parse_value(text: str):
    """``KEY=VALUE`` command-line values: booleans, numbers, lists, else strings (YAML rules)."""
    import yaml
    return yaml.safe_load(text)


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
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder is not None else {}


def resolve_config(spec: str) -> str:
    """``--config``: a YAML file, or the name of a shipped preset (``c10_wrn40_2_wrn16_2_fast``)."""
    import os
    if os.path.isfile(os.path.expanduser(spec)):
        return os.path.expanduser(spec)
    presets = available_presets()
    name = os.path.basename(spec)
    name = name[:-5] if name.endswith(".yaml") else name
    if name in presets and (spec == name or spec.endswith(os.path.join("configs", name + ".yaml"))):
        return str(presets[name])  # a preset name, or configs/NAME.yaml typed outside the checkout
    known = ", ".join(presets) or "(none found in this installation)"
    raise CpscError(f"Config file {spec} does not exist, and it is not the name of a shipped preset. Pass the "
                    f"path of a YAML file or one of: {known} (listed by `cpsc-lite presets`).")


def load_yaml(path: str) -> dict:
    import yaml
    path = resolve_config(path)
    with open(path) as f:
        try:
            d = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise CpscError(f"Config file {path} is not valid YAML: {exc}") from None
    if not isinstance(d, dict):
        raise CpscError(f"Config file {path} must hold a mapping of settings (key: value lines).")
    return d
