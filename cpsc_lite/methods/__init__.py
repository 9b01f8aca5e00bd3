"""The methods: one module per family, each with its loss terms, its steps and its presets.

* :mod:`~cpsc_lite.methods.cpsc`: CPSC-DFKD, its ablations, the paper's weights, the authors' code
* :mod:`~cpsc_lite.methods.adversarial`: DFAD and DAFL
* :mod:`~cpsc_lite.methods.inversion`: DeepInversion
* :mod:`~cpsc_lite.methods.cmi`: CMI
* :mod:`~cpsc_lite.methods.bounds`: KD on noise (lower bound) and on the real data (upper bound)

A *method* is a name with a preset of settings and the family that runs it; :func:`make_config`
builds its config. :mod:`~cpsc_lite.methods.base` is what the families share and what they get
from the run (:class:`~cpsc_lite.methods.base.Run`).
"""

from __future__ import annotations

import warnings
from typing import Optional

from .. import CpscError
from ..config import DistillConfig, canonical, flatten, parse_value
from . import adversarial, bounds, cmi, cpsc, inversion
from .base import Method

_FAMILIES = (cpsc, adversarial, inversion, cmi, bounds)

#: Method name -> its settings (how they differ from the defaults, which are CPSC-DFKD's).
METHODS: dict[str, dict] = {}
#: Method name -> one line saying what it is.
METHOD_HELP: dict[str, str] = {}
#: Method name -> the family class that runs it.
FAMILY: dict[str, type] = {}
for _module in _FAMILIES:
    METHODS.update(_module.PRESETS)
    METHOD_HELP.update(_module.HELP)
    FAMILY.update(_module.FAMILY)
# the table order: CPSC-DFKD and the baselines, the bounds, then the ablations and paper presets
_ORDER = ["cpsc", "dfad", "dafl", "deepinv", "cmi", "bn_ce", "noise", "data"]
METHODS = {k: METHODS[k] for k in _ORDER + [m for m in METHODS if m not in _ORDER]}
METHOD_HELP = {k: METHOD_HELP[k] for k in METHODS}

#: The baselines' own published settings at CIFAR scale, for config files (``methods: cifar10``):
#: data set -> method -> settings. The budget (iters, batch size) is the file's.
BASELINE_SETTINGS: dict[str, dict] = {}
for _module in (adversarial, inversion, cmi):
    for _dataset, _settings in _module.PUBLISHED.items():
        BASELINE_SETTINGS.setdefault(_dataset, {}).update(_settings)

#: Methods whose own published schedule differs from CPSC's: a config file used with one of them
#: should say, in its ``methods:`` section, which settings that method takes at its scale.
OWN_SCHEDULE = ("dfad", "dafl", "deepinv", "cmi")


def family_of(method: str) -> type:
    """The family class that runs ``method`` (a name or a variant ``NAME:KEY=VALUE``)."""
    name = method_variant(method)[0]
    if name not in FAMILY:
        raise CpscError(
            f"Unknown method {name!r}. Choose one of: {', '.join(METHODS)}."
        )
    return FAMILY[name]


def build_method(run) -> Method:
    """The method object for ``run.cfg.method``, given the run it works in."""
    return family_of(run.cfg.method)(run)


def make_config(
    method: str = "cpsc", base: Optional[dict] = None, **overrides
) -> DistillConfig:
    """Config for ``method``: defaults, then ``base`` (e.g. a YAML file), then the method's preset,
    then ``base["methods"][method]`` (that method's own settings at the file's scale), then the
    settings of a variant (``method`` written ``NAME:KEY=VALUE[:KEY=VALUE...]``, see
    :func:`method_variant`), then ``overrides`` (None values are ignored).

    A config file names CPSC's schedule at its scale; its ``methods:`` section gives the other
    methods theirs (e.g. ``methods: {dafl: {lr_generator: 0.02}}``), so ``--config c10_...
    --method dafl`` runs DAFL's CIFAR-10 settings, not CPSC's 6:5 schedule. ``methods: cifar10``
    (or ``cifar100``) names the published settings in :data:`BASELINE_SETTINGS`. Settings are
    named as :func:`cpsc_lite.config.canonical` reads them (short, dotted or older names).
    """
    method, variant = method_variant(method)
    if method not in METHODS:
        raise CpscError(
            f"Unknown method {method!r}. Choose one of: {', '.join(METHODS)}."
        )
    base = dict(base or {})
    per_method = _per_method_settings(base.pop("methods", None) or {})
    if base and method in OWN_SCHEDULE and method not in per_method:
        warnings.warn(
            f"The config file has no `methods: {{{method}: ...}}` section, so {method} runs with the "
            f"file's schedule (written for CPSC) and the settings of its preset for the built-in digits. "
            f"Add that section with {method}'s settings at this scale (the shipped configs/*.yaml have "
            "one).",
            stacklevel=2,
        )
    values = DistillConfig().flat()
    layers = (
        base,
        METHODS[method],
        per_method.get(method, {}),
        variant,
        {k: v for k, v in overrides.items() if v is not None},
    )
    for i, layer in enumerate(layers):
        changes = canonical(layer, values)
        if i >= 3:  # what the user asked for: no setting of another method's section
            _check_sections(method, changes)
        values.update(changes)
    values["method"] = method
    # validated on construction (types, ranges, choices)
    return DistillConfig.from_flat(values)


#: Sections only some families read; a setting there means nothing to the others.
OWN_SECTIONS = ("inversion", "cmi", "dafl", "authors")


def read_sections(method: str) -> tuple:
    """The config sections ``method`` reads (the budget, optimisers and logging always)."""
    return ("budget", "optim", "log") + family_of(method).sections


def _check_sections(method: str, changes: dict) -> None:
    reads = read_sections(method)
    foreign = sorted(
        path
        for path in changes
        if "." in path
        and path.split(".")[0] in OWN_SECTIONS
        and path.split(".")[0] not in reads
    )
    if foreign:
        users = {
            section: [m for m in METHODS if section in read_sections(m)]
            for section in {p.split(".")[0] for p in foreign}
        }
        used_by = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(users.items()))
        raise CpscError(
            f"{', '.join(foreign)} {'is a setting' if len(foreign) == 1 else 'are settings'} "
            f"that {method} does not use (it reads them only for {used_by}). Leave "
            f"{'it' if len(foreign) == 1 else 'them'} out, or choose that method."
        )


def _per_method_settings(per_method) -> dict:
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
    return {name: flatten(settings) for name, settings in per_method.items()}


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
