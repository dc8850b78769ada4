"""launch/lightvla.launch.py: evaluated with the real launch_ros where it is importable, and with
recording stand-ins for the launch API elsewhere (the PyPI ROS wheels have no launch packages)."""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / 'launch' / 'lightvla.launch.py'
ARGUMENTS = {'params_file', 'checkpoint', 'device', 'autostart', 'namespace', 'use_sim_time', 'demo_camera',
             'start_aggregator', 'rviz', 'fastdds_profile'}
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
    for config in ('lightvla.yaml', 'diagnostics_analyzers.yaml', 'lightvla.rviz',
                   'fastdds_camera_transport.xml'):
        assert config in strings and (ROOT / 'config' / config).is_file(), config


class _Recorded:
    """Stand-in for a launch class: remembers how it was constructed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Recorded):
    def perform(self, context: dict[str, str]) -> str:
        return context[self.args[0]]


class _FindPackageShare(_Recorded):
    def perform(self, context: dict[str, str]) -> str:
        return f'/ament/share/{self.args[0]}'


def _ament_index(root: Path, *packages: str) -> str:
    """An ament prefix under ``root`` in which exactly ``packages`` are installed."""
    index = root / 'share' / 'ament_index' / 'resource_index' / 'packages'
    index.mkdir(parents=True)
    for package in packages:
        (index / package).touch()
        (root / 'share' / package).mkdir()
    return str(root)


def _fake_launch_modules() -> dict[str, types.ModuleType]:
    classes = {'launch': ['LaunchDescription'],
               'launch.actions': ['DeclareLaunchArgument', 'LogInfo', 'OpaqueFunction'],
               'launch.substitutions': ['PathJoinSubstitution'],
               'launch_ros': [], 'launch_ros.actions': ['LifecycleNode', 'Node'],
               'launch_ros.substitutions': []}
    modules = {}
    for module_name, names in classes.items():
        module = types.ModuleType(module_name)
        for name in names:
            setattr(module, name, type(name, (_Recorded,), {}))
        modules[module_name] = module
    modules['launch.substitutions'].LaunchConfiguration = _LaunchConfiguration
    modules['launch_ros.substitutions'].FindPackageShare = _FindPackageShare
    return modules


def _split(actions: list[Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Started nodes by executable, and the logged lines."""
    nodes = {a.kwargs['executable']: a.kwargs for a in actions if type(a).__name__ in ('Node', 'LifecycleNode')}
    return nodes, [a.kwargs['msg'] for a in actions if type(a).__name__ == 'LogInfo']


@pytest.mark.skipif(HAVE_LAUNCH_ROS,
                    reason='launch_ros is installed: the real API is used instead')
def test_launch_description_with_stand_ins(monkeypatch, tmp_path):
    pytest.importorskip('ament_index_python')
    for name, module in _fake_launch_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv('AMENT_PREFIX_PATH', _ament_index(tmp_path, 'lightvla_ros', 'diagnostic_aggregator'))
    monkeypatch.delenv('FASTDDS_DEFAULT_PROFILES_FILE', raising=False)
    description = _load().generate_launch_description()
    entities = description.args[0]
    declared = {e.args[0]: e.kwargs for e in entities
                if type(e).__name__ == 'DeclareLaunchArgument'}
    assert set(declared) >= ARGUMENTS
    assert all(kw['description'] for kw in declared.values())
    opaque = [e for e in entities if type(e).__name__ == 'OpaqueFunction']
    assert len(opaque) == 1
    nodes_for = opaque[0].kwargs['function']
    context = {name: (kw['default_value'] if isinstance(kw['default_value'], str) else '')
               for name, kw in declared.items()}

    actions = nodes_for(context)
    assert [type(a).__name__ for a in actions if 'executable' in a.kwargs] == ['LifecycleNode']  # a managed node
    nodes, logged = _split(actions)
    assert set(nodes) == {'lightvla_node'}  # the optional nodes are off by default
    node = nodes['lightvla_node']
    assert node['package'] == 'lightvla_ros' and node['name'] == 'lightvla_node'
    assert node['parameters'][1] == {}  # empty overrides are left out: the parameter file decides
    profile = '/ament/share/lightvla_ros/config/fastdds_camera_transport.xml'
    assert node['additional_env'] == {'FASTDDS_DEFAULT_PROFILES_FILE': profile}
    assert not any('WARNING' in line for line in logged)

    # rviz2 is not in the index: it is reported, the rest starts
    context.update(demo_camera='true', start_aggregator='true', rviz='true')
    nodes, logged = _split(nodes_for(context))
    assert set(nodes) == {'lightvla_node', 'lightvla_demo_camera', 'aggregator_node'}
    warnings = [line for line in logged if line.startswith('WARNING')]
    assert len(warnings) == 1 and "package 'rviz2' is not installed" in warnings[0]
    assert 'apt install ros-$ROS_DISTRO-rviz2' in warnings[0]
    aggregator_files = nodes['aggregator_node']['parameters'][0].args[0]
    assert aggregator_files[-1] == 'diagnostics_analyzers.yaml'
    assert all(n['additional_env'] == {'FASTDDS_DEFAULT_PROFILES_FILE': profile} for n in nodes.values())

    monkeypatch.setenv('AMENT_PREFIX_PATH', _ament_index(tmp_path / 'full', 'lightvla_ros', 'rviz2',
                                                         'diagnostic_aggregator'))
    nodes, _ = _split(nodes_for(dict(context, fastdds_profile='false')))
    assert nodes['rviz2']['arguments'][1].args[0][-1] == 'lightvla.rviz'
    assert all(n['additional_env'] == {} for n in nodes.values())

    context.update(checkpoint='/models/lightvla', device='cuda:0', use_sim_time='true',
                   namespace='robot1', autostart='false')
    node = _split(nodes_for(context))[0]['lightvla_node']
    assert node['parameters'][1] == {'use_sim_time': True, 'checkpoint': '/models/lightvla',
                                     'device': 'cuda:0', 'autostart': False}
    assert node['namespace'] == 'robot1'


@pytest.mark.skipif(not HAVE_LAUNCH_ROS,
                    reason='launch_ros not installed (PyPI wheels); the structure is checked '
                           'with stand-ins instead')
def test_launch_description_with_launch_ros(monkeypatch, tmp_path):
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
    from launch_ros.actions import Node

    from lightvla_ros.ros.core.launch_plan import package_installed

    prefix = _ament_index(tmp_path, 'lightvla_ros')
    monkeypatch.setenv('AMENT_PREFIX_PATH', os.pathsep.join([prefix, os.environ.get('AMENT_PREFIX_PATH', '')]))
    description = _load().generate_launch_description()
    context = LaunchContext()
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert {e.name for e in declared} >= ARGUMENTS
    context.launch_configurations.update(
        params_file=str(ROOT / 'config' / 'lightvla.yaml'), checkpoint='/models/lightvla',
        device='', autostart='', namespace='', use_sim_time='false', demo_camera='true',
        start_aggregator='true', rviz='true', fastdds_profile='true')
    opaque = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    actions = opaque[0].visit(context)
    executables = {n.node_executable for n in actions if isinstance(n, Node)}
    expected = {'lightvla_node', 'lightvla_demo_camera'}
    expected |= {'aggregator_node'} if package_installed('diagnostic_aggregator') else set()
    expected |= {'rviz2'} if package_installed('rviz2') else set()
    assert executables == expected
    logged = [''.join(s.perform(context) for s in a.msg) for a in actions if isinstance(a, LogInfo)]
    assert len([line for line in logged if 'is not installed' in line]) == 4 - len(expected)
    profile = ''.join(s.perform(context) for s in
                      [n for n in actions if isinstance(n, Node)][0].additional_env[0][1])
    assert profile == str(tmp_path / 'share' / 'lightvla_ros' / 'config' / 'fastdds_camera_transport.xml')
