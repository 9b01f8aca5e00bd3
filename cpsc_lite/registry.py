"""Names -> builders: the model and dataset registries (timm's rule: a registry is a leaf).

Model families (:mod:`cpsc_lite.models`, :mod:`cpsc_lite.cifar_models`) and dataset loaders
(:mod:`cpsc_lite.data`, :mod:`cpsc_lite.vision_datasets`) import this module and register
themselves; it imports none of them. The public entry points, ``models.create_model`` and
``data.load_dataset``, import their families at the top, so a broken family fails loudly on
import instead of reading as "Unknown model".

One mechanism serves plain names (``resnet34``, ``cifar10``) and path prefixes (``npz:PATH``,
``folder:PATH``): a builder registered with ``takes_path=True`` is called with the PATH part.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional

from . import CpscError


class Registry:
    """A name -> builder table with one-line descriptions and a clear error for unknown names."""

    def __init__(self, kind: str, hint: str = ""):
        self.kind = kind  #: "model" or "dataset": used in the error message
        self.hint = hint  #: appended to the unknown-name error (where to read more)
        self._builders: dict[str, Callable] = {}
        self._descriptions: dict[str, str] = {}
        self._takes_path: set[str] = set()

    def register(self, name: str, description: str = "", *, takes_path: bool = False):
        """Decorator: make ``fn`` buildable by ``name`` (or by ``name:PATH`` with ``takes_path``)."""

        def wrap(fn):
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._builders[name] = fn
            self._descriptions[name] = (
                description or (fn.__doc__ or "").strip().splitlines()[0]
            )
            if takes_path:
                self._takes_path.add(name)
            return fn

        return wrap

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests register throw-away entries)."""
        self._builders.pop(name, None)
        self._descriptions.pop(name, None)
        self._takes_path.discard(name)

    def __contains__(self, name: str) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._builders))

    def spelled(self, name: str) -> str:
        """How a user writes the entry: ``cifar10``, or ``npz:PATH`` for a path prefix."""
        return f"{name}:PATH" if name in self._takes_path else name

    def describe(self) -> dict[str, str]:
        """Every entry as the user writes it, with its one-line description, sorted."""
        return {self.spelled(n): self._descriptions[n] for n in sorted(self._builders)}

    def resolve(self, spec: str) -> tuple[Callable, Optional[str]]:
        """``(builder, path)`` for ``spec``; ``path`` is None for a plain name."""
        name, sep, path = spec.partition(":")
        if sep and name in self._takes_path:
            return self._builders[name], path
        if spec in self._builders and spec not in self._takes_path:
            return self._builders[spec], None
        choices = ", ".join(self.spelled(n) for n in sorted(self._builders))
        raise CpscError(
            f"Unknown {self.kind} {spec!r}. Choose one of: {choices}."
            + (f" {self.hint}" if self.hint else "")
        )


#: Classifiers: ``fn(num_classes, in_channels, img_size) -> nn.Module``.
MODELS = Registry("model", "Run `cpsc-lite models` to see what each one is.")
#: Datasets: ``fn(root, download) -> DataBundle``, or ``fn(path) -> DataBundle`` for a path prefix.
DATASETS = Registry("dataset", "Run `cpsc-lite datasets` to see what each one is.")
