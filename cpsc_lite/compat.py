"""Older names and layouts of settings, in one place: runs saved by earlier versions resume as they
started, and older YAML files, ``--set`` names and benchmark tables keep their meaning.

:mod:`cpsc_lite.config` calls :func:`upgrade` on every set of settings it reads; nothing else in
the package needs to know that a setting was ever called anything else.
"""

from __future__ import annotations

from typing import Optional

from . import CpscError

#: Settings whose name changed: old name -> the name it became (both then map to a dotted path).
RENAMED_SETTINGS: dict[str, str] = {
    "scl_for_student": "student_scl",
    "use_ce": "teacher_ce",
}

#: Flat names of settings that now live in a baseline's section under a shorter name.
MOVED_SETTINGS: dict[str, str] = {
    "inversion_steps": "inversion.steps",
    "inversion_lr": "inversion.lr",
    "inversion_every": "inversion.every",
    "pool_batches": "inversion.pool_batches",
    "adi_weight": "inversion.adi",
    "cmi_weight": "cmi.weight",
    "cmi_temperature": "cmi.temperature",
    "cmi_bank": "cmi.bank",
    "cmi_negatives": "cmi.negatives",
    "cmi_head_dim": "cmi.head_dim",
    "cmi_adv": "cmi.adv",
    "cmi_features": "cmi.features",
    "dafl_onehot": "dafl.onehot",
    "dafl_activation": "dafl.activation",
    "dafl_entropy": "dafl.entropy",
    "dafl_log10": "dafl.log10",
}

#: Settings introduced after runs could already be saved (flat configs), with the value that
#: reproduces how those runs trained: a resumed run continues as it started, not with a new default.
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

#: Benchmark rows whose method was renamed: (name then, the version that renamed it, name now).
#: cpsc-lite 0.1/0.2 called the conditional generator with BN prior + CE "deepinv"; 0.3 gave that
#: name to DeepInversion proper and the old method the name "bn_ce".
RENAMED_METHODS = (("deepinv", "0.3.0", "bn_ce"),)

#: On/off switches of loss terms, replaced by the term's weight (0 = off): switch -> dotted path.
WEIGHT_SWITCHES = {
    "use_adv": "objective.adv",
    "use_ikd": "objective.alpha",
    "use_bn": "objective.beta",
    "use_scl": "objective.gamma",
    "teacher_ce": "objective.eta",
}
#: Settings the method now decides (its family): the value each family had.
FAMILY_SETTINGS = ("input_source", "inversion_target", "kd_loss", "use_dafl")


def _value(d: dict, context: dict, name: str, path: str):
    return d[name] if name in d else d.get(path, context.get(path))


def upgrade(d: dict, context: Optional[dict] = None, saved: bool = False) -> dict:
    """Flat settings ``d`` with every older switch written as today's weights.

    ``context`` holds the values the settings apply on top of (dotted paths), so that e.g.
    ``student_ce=true`` becomes ``eta_student`` = the eta in force. Switches that turn a term on
    leave its weight as it is. ``saved``: ``d`` is a whole config an older version stored, whose
    ``input_source``, ``kd_loss`` and ``kd_temperature`` are accepted (the method now decides
    them); from a user they are an error that says what to use instead.
    """
    context = context or {}
    d = dict(d)
    out = {k: v for k, v in d.items() if k not in _LEGACY}
    use_scl = d.get("use_scl", True)
    if "student_scl" in d:
        gamma = (
            0.0 if use_scl is False else _value(d, context, "gamma", "objective.gamma")
        )
        out["objective.gamma_student"] = gamma if d["student_scl"] is True else 0.0
    if "student_ce" in d:
        eta = _value(d, context, "eta", "objective.eta")
        out["objective.eta_student"] = eta if d["student_ce"] is True else 0.0
    for switch, path in WEIGHT_SWITCHES.items():
        if switch in d:
            if not isinstance(d[switch], bool):
                raise CpscError(
                    f"Invalid setting: {switch} must be true or false, not {d[switch]!r}. Fix "
                    "the value in --set KEY=VALUE, the flag or the config file."
                )
            if d[switch] is False:
                out[path] = 0.0
                out.pop(path.split(".")[1], None)
                if switch == "use_scl":
                    out["objective.gamma_student"] = 0.0
    for name in FAMILY_SETTINGS + ("kd_temperature",):
        if name in d and not saved:
            raise CpscError(_family_setting_message(name, d[name]))
    if saved and float(d.get("kd_temperature", 1.0)) != 1.0:
        raise CpscError(
            f"This run was saved with kd_temperature={d['kd_temperature']}; the package now always "
            "distils at temperature 1 and cannot resume it. Start a new run (--overwrite)."
        )
    return out


def _family_setting_message(name: str, value) -> str:
    if name == "kd_temperature":
        return (
            "kd_temperature is no longer a setting: distillation always uses temperature 1 "
            "(the paper's). Leave it out."
        )
    hint = {
        "input_source": "--method noise, data, deepinv or cmi for other student inputs",
        "inversion_target": "--method deepinv (pixels) or --method cmi (a generator)",
        "kd_loss": "--method dfad for DFAD's L1 distance",
        "use_dafl": "--method dafl for DAFL's losses (their weights: dafl.onehot, "
        "dafl.activation, dafl.entropy)",
    }[name]
    return f"{name} (here {value!r}) is now decided by the method: use {hint}."


_LEGACY = set(WEIGHT_SWITCHES) | {
    "student_scl",
    "student_ce",
    "kd_temperature",
    *FAMILY_SETTINGS,
}
