"""launch/lightvla.launch.py: evaluated with the real launch_ros where it is importable, and with
recording stand-ins for the launch API elsewhere (the PyPI ROS wheels have no launch packages)."""

from __future__ import annotations

import ast
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / 'launch' / 'lightvla.launch.py'
ARGUMENTS = {'params_file', 'checkpoint', 'device', 'namespace', 'use_sim_time', 'demo_camera',
             'start_aggregator'}
HAVE_LAUNCH_ROS = importlib.util.find_spec('launch_ros') is not None


def _load(name: str = 'lightvla_launch_under_test') -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_static_structure():
    tree = ast.parse(LAUNCH_FILE.read_text())
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert 'generate_launch_description' in functions
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
               and isinstance(n.value, str)}
    assert ARGUMENTS <= strings
    assert {'lightvla_node', 'lightvla_demo_camera', 'aggregator_node'} <= strings
    for config in ('lightvla.yaml', 'diagnostics_analyzers.yaml', 'lightvla.rviz'):
        assert config in strings and (ROOT / 'config' / config).is_file(), config


class _Recorded:
    """Stand-in for a launch class: remembers how it was constructed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Recorded):
    def perform(self, context: dict[str, str]) -> str:
        return context[self.args[0]]


def _fake_launch_modules() -> dict[str, types.ModuleType]:
    classes = {'launch': ['LaunchDescription'],
               'launch.actions': ['DeclareLaunchArgument', 'OpaqueFunction'],
               'launch.conditions': ['IfCondition'],
               'launch.substitutions': ['PathJoinSubstitution'],
               'launch_ros': [], 'launch_ros.actions': ['Node'],
               'launch_ros.substitutions': ['FindPackageShare']}
    modules = {}
    for module_name, names in classes.items():
        module = types.ModuleType(module_name)
        for name in names:
            setattr(module, name, type(name, (_Recorded,), {}))
        modules[module_name] = module
    modules['launch.substitutions'].LaunchConfiguration = _LaunchConfiguration
    return modules


@pytest.mark.skipif(HAVE_LAUNCH_ROS,
                    reason='launch_ros is installed: the real API is used instead')
def test_launch_description_with_stand_ins(monkeypatch):
    for name, module in _fake_launch_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    description = _load().generate_launch_description()
    entities = description.args[0]
    declared = {e.args[0]: e.kwargs for e in entities
                if type(e).__name__ == 'DeclareLaunchArgument'}
    assert set(declared) >= ARGUMENTS
    assert all(kw['description'] for kw in declared.values())
    opaque = [e for e in entities if type(e).__name__ == 'OpaqueFunction']
    assert len(opaque) == 1
    context = {name: (kw['default_value'] if isinstance(kw['default_value'], str) else '')
               for name, kw in declared.items()}

    nodes = opaque[0].kwargs['function'](context)
    by_exe = {n.kwargs['executable']: n.kwargs for n in nodes}
    assert set(by_exe) == {'lightvla_node', 'lightvla_demo_camera', 'aggregator_node', 'rviz2'}
    node = by_exe['lightvla_node']
    assert node['package'] == 'lightvla_ros' and node['name'] == 'lightvla_node'
    assert node['parameters'][1] == {'use_sim_time': False}  # empty overrides are left out
    assert 'condition' not in node
    for optional, argument in (('lightvla_demo_camera', 'demo_camera'),
                               ('aggregator_node', 'start_aggregator'), ('rviz2', 'rviz')):
        assert by_exe[optional]['condition'].args[0].args[0] == argument
    aggregator_files = by_exe['aggregator_node']['parameters'][0].args[0]
    assert aggregator_files[-1] == 'diagnostics_analyzers.yaml'
    assert by_exe['rviz2']['arguments'][1].args[0][-1] == 'lightvla.rviz'

    context.update(checkpoint='/models/lightvla', device='cuda:0', use_sim_time='true',
                   namespace='robot1')
    node = {n.kwargs['executable']: n.kwargs for n in opaque[0].kwargs['function'](context)}[
        'lightvla_node']
    assert node['parameters'][1] == {'use_sim_time': True, 'checkpoint': '/models/lightvla',
                                     'device': 'cuda:0'}
    assert node['namespace'] == 'robot1'


@pytest.mark.skipif(not HAVE_LAUNCH_ROS,
                    reason='launch_ros not installed (PyPI wheels); the structure is checked '
                           'with stand-ins instead')
def test_launch_description_with_launch_ros():
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    description = _load().generate_launch_description()
    context = LaunchContext()
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert {e.name for e in declared} >= ARGUMENTS
    context.launch_configurations.update(
        params_file=str(ROOT / 'config' / 'lightvla.yaml'), checkpoint='/models/lightvla',
        device='', namespace='', use_sim_time='false', demo_camera='true',
        start_aggregator='true', rviz='false')
    opaque = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    nodes = opaque[0].visit(context)
    executables = {n.node_executable for n in nodes}
    assert {'lightvla_node', 'lightvla_demo_camera', 'aggregator_node', 'rviz2'} == executables
