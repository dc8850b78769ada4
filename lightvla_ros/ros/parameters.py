"""Declare the node's parameters (with descriptors) and keep its typed :class:`NodeConfig` current.

Follows ros2/demos: the on-set callback only validates (all changes in a request, before any is applied) and the
post-set callback applies the side effects. A mistyped or out-of-range value in a parameter file does not kill the
node: the default is kept and the problem is reported (configure then fails with it, see :attr:`errors`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterUninitializedException,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from lightvla_ros.ros.core.params import PARAMS, SPECS, NodeConfig, ParamSpec, validate_value

_ARRAY_TYPES = {'string': Parameter.Type.STRING_ARRAY, 'double': Parameter.Type.DOUBLE_ARRAY,
                'integer': Parameter.Type.INTEGER_ARRAY}

# Extra validation of run-time changes that needs more than the table (e.g. the loaded checkpoint): '' when fine.
ChangeCheck = Callable[[NodeConfig, Mapping[str, Any]], str]
# Side effects of accepted run-time changes: (new config, names that changed).
ChangeHook = Callable[[NodeConfig, set[str]], None]


def error_text(exc: BaseException, limit: int = 300) -> str:
    """A one-line, bounded description of an exception for logs and diagnostics."""
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + '...'


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """What `ros2 param describe` shows: description, read-only flag, choices and range."""
    desc = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        desc.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    if spec.min_value is not None:
        if isinstance(spec.default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(spec.min_value),
                                                            to_value=float(spec.max_value))]
        else:
            desc.integer_range = [IntegerRange(from_value=int(spec.min_value), to_value=int(spec.max_value), step=1)]
    return desc


class NodeParameters:
    """The declared parameters of one node and the current typed configuration."""

    def __init__(self, node: Node, check: ChangeCheck, on_change: ChangeHook) -> None:
        self._node = node
        self._check = check
        self._on_change = on_change
        self.errors: list[str] = []
        for spec in PARAMS:
            self._declare(spec)
        self._config = self.read()
        node.add_on_set_parameters_callback(self._validate)
        node.add_post_set_parameters_callback(self._apply)

    @property
    def config(self) -> NodeConfig:
        """The configuration in force (replaced as a whole on each accepted change, so readers see one version)."""
        return self._config

    def read(self) -> NodeConfig:
        """The configuration from the parameters' current values."""
        values = {}
        for spec in PARAMS:
            try:
                values[spec.name] = self._node.get_parameter(spec.name).value
            except ParameterUninitializedException:
                values[spec.name] = spec.default
        self._config = NodeConfig.from_values(values)
        return self._config

    def problem(self) -> str:
        """Why the declared configuration cannot be used, or ''."""
        return '; '.join(self.errors) or self._config.problem()

    def _declare(self, spec: ParamSpec) -> None:
        default = _ARRAY_TYPES[spec.element] if isinstance(spec.default, list) and not spec.default else spec.default
        try:
            self._node.declare_parameter(spec.name, default, descriptor(spec))
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            self._node.declare_parameter(spec.name, default, descriptor(spec), ignore_override=True)
            self.errors.append(f'parameter {spec.name}: {error_text(exc)}')

    def _validate(self, params: list[Parameter]) -> SetParametersResult:
        updates = {p.name: p.value for p in params if p.name in SPECS}
        for name, value in updates.items():
            reason = validate_value(SPECS[name], value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        reason = self._check(self._config, updates)
        return SetParametersResult(successful=not reason, reason=reason)

    def _apply(self, params: list[Parameter]) -> None:
        updates = {p.name: p.value for p in params if p.name in SPECS}
        if not updates:
            return
        self._config = self._config.updated(updates)
        self._on_change(self._config, set(updates))
