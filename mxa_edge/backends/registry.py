"""The backend registry: every export target, looked up by target name or by runtime.

The built-in targets are declared in ``mxa_edge.backends.onnxruntime``, ``.openvino`` and
``.tensorrt``; a new target is one module with a ``BackendSpec`` passed to ``register`` (see
ARCHITECTURE.md). export, predict, eval, the report, bench and the CLI's ``--target`` choices all
iterate this registry.
"""

from __future__ import annotations

from mxa_edge.backends.spec import BackendSpec
from mxa_edge.formats.precision import Precision
from mxa_edge.support.errors import ConfigError

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


def check_options(
    spec: BackendSpec, precision: Precision, *, fp16: bool = False, static_batch: int | None = None
) -> None:
    """ConfigError for a combination target ``spec`` cannot export (messages name the registered
    targets that can)."""
    if fp16 and precision.int8 and not spec.int8_with_fp16:
        if precision.qat:
            raise ConfigError("--qat gives an INT8 model; drop --fp16")
        raise ConfigError(
            f"--fp16 and --int8 together are only meaningful for targets with INT8+FP16 engines "
            f"({', '.join(s.name for s in all_specs() if s.int8_with_fp16) or 'none'})"
        )
    if precision not in spec.precisions:
        if precision is Precision.QAT_INT8:
            raise ConfigError(f"--qat is not available for --target {spec.name}")
        wanted = precision.label
        offered = ", ".join(p.label for p in spec.precisions)
        raise ConfigError(f"--target {spec.name} exports {offered}, not {wanted}")
    if static_batch is not None and (not spec.static_batch or static_batch < 1):
        raise ConfigError(
            f"--static-batch takes a batch size >= 1 and applies to targets with a fixed-batch export "
            f"({', '.join(s.name for s in all_specs() if s.static_batch) or 'none'}), "
            f"got {static_batch} for {spec.name}"
        )
    if spec.validate is not None:
        spec.validate(precision, fp16, static_batch)
