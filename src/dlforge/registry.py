"""Name -> factory registries. Tasks, models and datasets register with a decorator.

A registry can also hold *families*: `timm:<name>` resolves to the `timm` family factory,
called with the part after the colon. An open family (`names=None`, e.g. `hf:<hub id or path>`)
accepts any name; its factory says whether the name exists when it builds.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from dlforge.errors import DlforgeError

T = TypeVar("T")


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean 'x' or 'y'?)' for the closest choices, or '' if none is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        # family name -> (factory, function listing the family's names for suggestions)
        self._families: dict[str, tuple[Callable[..., Any], Callable[[], list[str]] | None]] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            return obj

        return decorator

    def register_family(self, prefix: str, names: Callable[[], list[str]] | None) -> Callable:
        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            self._families[prefix] = (factory, names)
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._items)

    def check(self, name: str) -> None:
        """Raise a DlforgeError naming the closest known names if `name` is not registered."""
        if name in self._items:
            return
        prefix, sep, rest = name.partition(":")
        if sep and prefix in self._families:
            if not rest:
                raise DlforgeError(f"{self.kind} {name!r}: give a name after {prefix}:")
            names = self._families[prefix][1]
            if names is None:
                return
            known = names()
            if rest in known:
                return
            raise DlforgeError(f"unknown {prefix} {self.kind} {rest!r}{did_you_mean(rest, known)}")
        choices = self.names() + [f"{p}:<name>" for p in self._families]
        hint = did_you_mean(name, self.names()) or f"; known: {', '.join(choices)}"
        raise DlforgeError(f"unknown {self.kind} {name!r}{hint}")

    def get(self, name: str) -> Any:
        """The registered object; for `family:rest`, the family factory bound to `rest`."""
        self.check(name)
        if name in self._items:
            return self._items[name]
        prefix, _, rest = name.partition(":")
        factory = self._families[prefix][0]
        return lambda *args, **kwargs: factory(rest, *args, **kwargs)


TASKS: Registry = Registry("task")
MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("dataset")
DETECTORS: Registry = Registry("detection model")
SEGMENTERS: Registry = Registry("segmentation model")
FORECASTERS: Registry = Registry("forecasting model")
TEXT_MODELS: Registry = Registry("text model")
LANGUAGE_MODELS: Registry = Registry("language model")
LABS: Registry = Registry("lab")
# Verbs a capability adds to the `dlforge` command (e.g. `dlforge forecast`): name -> a typer command function (typed
# parameters; its docstring is the help), registered in the capability's own module, listed in `dlforge.cli`'s
# `VERB_MODULES`; the CLI adds each one as it adds its own verbs.
COMMANDS: Registry = Registry("command")
