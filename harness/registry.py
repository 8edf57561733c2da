"""Registries for backbones, methods and tasks (timm's ``@register_model`` style).

A registry maps a name to a factory plus static metadata. The metadata is plain data so that
``bob list`` can show and filter it without importing torch: plugin modules must stay
import-light and import heavy libraries inside their factories.

Besides exact names, a registry can hold *prefix resolvers* ("timm:" accepts any timm model
name); a resolver validates the name and returns the entry on demand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .errors import BobError, did_you_mean


@dataclass(frozen=True)
class Entry:
    """One registered plugin: ``factory`` builds the object, ``meta`` describes it statically."""

    name: str
    factory: Callable[..., Any]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PrefixResolver:
    """Accepts every name ``<prefix>:<rest>``; ``resolve(name)`` returns an Entry or raises BobError."""

    prefix: str
    resolve: Callable[[str], Entry]
    help: str


class Registry:
    """A named collection of plugins of one kind (``backbone``, ``method`` or ``task``)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._prefixes: dict[str, PrefixResolver] = {}

    # -- registration -------------------------------------------------------------------
    def register(self, name: str | None = None, **meta: Any) -> Callable:
        """Decorator: ``@BACKBONES.register("timm:resnet50", family="cnn")``."""

        def decorator(factory: Callable) -> Callable:
            self.add(name or factory.__name__, factory, **meta)
            return factory

        return decorator

    def add(self, name: str, factory: Callable, **meta: Any) -> None:
        if name in self._entries and self._entries[name].factory is not factory:
            existing = self._entries[name].factory
            raise BobError(
                f"{self.kind} '{name}' is registered twice ({existing.__module__} and "
                f"{factory.__module__}); rename one of them"
            )
        self._entries[name] = Entry(name, factory, dict(meta))

    def add_prefix(self, prefix: str, resolve: Callable[[str], Entry], help: str) -> None:
        self._prefixes[prefix] = PrefixResolver(prefix, resolve, help)

    # -- lookup -------------------------------------------------------------------------
    def get(self, name: str) -> Entry:
        """The entry for ``name``; an unknown name raises a one-line error with close matches."""
        from .plugins import load_plugins

        load_plugins()
        if name in self._entries:
            return self._entries[name]
        prefix, sep, _ = name.partition(":")
        if sep and prefix in self._prefixes:
            return self._prefixes[prefix].resolve(name)
        known = list(self._entries)
        hint = did_you_mean(name, known)
        extra = ""
        if self._prefixes:
            extra = "; " + "; ".join(p.help for p in self._prefixes.values())
        raise BobError(f"unknown {self.kind} '{name}'{hint}; `bob list {self.kind}s` shows the registered ones{extra}")

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except BobError:
            return False
        return True

    def entries(self) -> Iterator[Entry]:
        from .plugins import load_plugins

        load_plugins()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def prefixes(self) -> list[PrefixResolver]:
        from .plugins import load_plugins

        load_plugins()
        return list(self._prefixes.values())


BACKBONES = Registry("backbone")
METHODS = Registry("method")
TASKS = Registry("task")
SUITES = Registry("suite")  # suite -> groups -> tasks, table rules and data hooks (harness/suites.py)


def register_backbone(name: str | None = None, **meta: Any) -> Callable:
    return BACKBONES.register(name, **meta)


def register_method(cls: type) -> type:
    """Class decorator: the method's metadata is its class attributes (name, kinds, defaults...)."""
    METHODS.add(
        cls.name,
        cls,
        kinds=list(cls.kinds),
        frozen_backbone=cls.frozen_backbone,
        defaults=dict(cls.defaults),
        search_space=dict(cls.search_space),
        description=cls.description,
        backbone_sources=list(getattr(cls, "backbone_sources", ()) or ()),
        higher_is_better=getattr(cls, "higher_is_better", True),
        metrics=dict(getattr(cls, "metrics", {}) or {}),
        backbone_requires=dict(getattr(cls, "backbone_requires", {}) or {}),
    )
    return cls


def register_task(name: str | None = None, **meta: Any) -> Callable:
    return TASKS.register(name, **meta)
