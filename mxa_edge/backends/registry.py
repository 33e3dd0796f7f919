"""The backend registry: every export target, looked up by target name or by runtime.

The built-in targets are declared in ``mxa_edge.backends.onnxruntime``, ``.openvino`` and
``.tensorrt``; a new target is one module with a ``BackendSpec`` passed to ``register`` (see
ARCHITECTURE.md). export, predict, eval, the report, bench and the CLI's ``--target`` choices all
iterate this registry.
"""

from __future__ import annotations

from mxa_edge.backends.spec import BackendSpec
from mxa_edge.errors import ConfigError

_SPECS: dict[str, BackendSpec] = {}


def register(spec: BackendSpec, *, replace: bool = False) -> BackendSpec:
    if not replace and spec.name in _SPECS:
        raise ConfigError(f"export target {spec.name!r} is already registered")
    clash = [s.name for s in _SPECS.values() if s.runtime == spec.runtime and s.name != spec.name]
    if clash:
        raise ConfigError(f"runtime {spec.runtime!r} already belongs to target {clash[0]!r}")
    _SPECS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _SPECS.pop(name, None)


def all_specs() -> list[BackendSpec]:
    return sorted(_SPECS.values(), key=lambda s: (s.order, s.name))


def names() -> list[str]:
    return [s.name for s in all_specs()]


def get(name: str) -> BackendSpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise ConfigError(f"unknown export target {name!r}; expected one of {', '.join(names())}") from None


def for_runtime(runtime: str) -> BackendSpec:
    for spec in _SPECS.values():
        if spec.runtime == runtime:
            return spec
    raise ConfigError(f"no backend runs {runtime!r} here; known runtimes: {', '.join(s.runtime for s in all_specs())}")
