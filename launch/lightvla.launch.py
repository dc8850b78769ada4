"""Launch lightvla_node, optionally with the demo camera, the diagnostics aggregator and rviz.

    ros2 launch lightvla_ros lightvla.launch.py checkpoint:=/path/to/checkpoint
    ros2 launch lightvla_ros lightvla.launch.py checkpoint:=/tmp/tiny demo_camera:=true \
        start_aggregator:=true rviz:=true
    ros2 launch lightvla_ros lightvla.launch.py checkpoint:=/path autostart:=false   # then:
    ros2 lifecycle set /lightvla_node configure && ros2 lifecycle set /lightvla_node activate

lightvla_node is a managed node (a ``LifecycleNode`` action, so launch files can react to its transitions); with
``autostart`` true (the parameter file's default) it configures and activates itself, with false it waits for a
lifecycle manager.

The node's parameters come from ``params_file`` (default: the package's config/lightvla.yaml); the
checkpoint and device arguments override it when given. The aggregator and rviz2 are started only when
their packages are installed; otherwise a warning says what to install and the rest starts. The started
nodes get the Fast DDS transport profile config/fastdds_camera_transport.xml (``fastdds_profile``).
"""

import os
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from lightvla_ros.ros.core.launch_plan import fastdds_profile, is_true, plan_optional_nodes

PACKAGE = 'lightvla_ros'

ARGUMENTS = (
    ('params_file', PathJoinSubstitution([FindPackageShare(PACKAGE), 'config', 'lightvla.yaml']),
     'Parameter file of lightvla_node.'),
    ('checkpoint', '', 'Checkpoint folder; overrides the parameter file when not empty.'),
    ('device', '', 'auto, cpu, cuda or cuda:N; overrides the parameter file when not empty.'),
    ('autostart', '', 'true: configure and activate at start; false: wait for a lifecycle manager or '
                      '`ros2 lifecycle set`; empty: as the parameter file says (true).'),
    ('namespace', '', 'Namespace of the nodes (the instruction topic is then <ns>/instruction).'),
    ('use_sim_time', '', 'Use /clock (rosbag replay with --clock, a simulator); empty: as the parameter file says '
                         '(false in config/lightvla.yaml, true in config/libero_sim.yaml).'),
    ('demo_camera', 'false',
     'Also start lightvla_demo_camera (synthetic camera frames and state).'),
    ('start_aggregator', 'false',
     'Start diagnostic_aggregator with config/diagnostics_analyzers.yaml '
     '(for rqt_robot_monitor).'),
    ('rviz', 'false',
     'Start rviz2 with config/lightvla.rviz (debug image and predicted EEF path).'),
    ('fastdds_profile', 'true',
     'Fast DDS transport profile for the started nodes: true (config/fastdds_camera_transport.xml, '
     'a 16 MiB shared-memory segment that 640x480 frames need; an existing '
     'FASTDDS_DEFAULT_PROFILES_FILE is kept), false, or the path of another profile.'),
)


def _nodes(context, *args, **kwargs):
    """Build the nodes once the arguments are known (so empty overrides and missing packages can be left out)."""
    value = {name: LaunchConfiguration(name).perform(context)
             for name in ('namespace', 'use_sim_time', 'demo_camera', 'start_aggregator', 'rviz',
                          'fastdds_profile')}
    namespace = value['namespace']
    overrides = {}
    if value['use_sim_time']:
        overrides['use_sim_time'] = is_true(value['use_sim_time'], 'use_sim_time')
    use_sim_time = overrides.get('use_sim_time', False)  # for the other nodes, which have no parameter file
    for name in ('checkpoint', 'device'):
        override = LaunchConfiguration(name).perform(context)
        if override:
            overrides[name] = override
    autostart = LaunchConfiguration('autostart').perform(context)
    if autostart:
        overrides['autostart'] = is_true(autostart, 'autostart')
    share = FindPackageShare(PACKAGE)
    shipped_profile = Path(share.perform(context)) / 'config' / 'fastdds_camera_transport.xml'
    profile, profile_note = fastdds_profile(value['fastdds_profile'], shipped_profile, os.environ)
    env = {'FASTDDS_DEFAULT_PROFILES_FILE': profile} if profile else {}
    optional, missing = plan_optional_nodes(value)
    actions = [LogInfo(msg=profile_note)] + [LogInfo(msg=f'WARNING: {text}') for text in missing]
    actions.append(LifecycleNode(package=PACKAGE, executable='lightvla_node', name='lightvla_node',
                                 namespace=namespace, output='screen', emulate_tty=True, additional_env=env,
                                 parameters=[LaunchConfiguration('params_file'), overrides]))
    if is_true(value['demo_camera'], 'demo_camera'):
        actions.append(Node(package=PACKAGE, executable='lightvla_demo_camera',
                            name='lightvla_demo_camera', namespace=namespace, output='screen',
                            additional_env=env, parameters=[{'use_sim_time': use_sim_time}]))
    started = {node.package for node in optional}
    if 'diagnostic_aggregator' in started:
        actions.append(Node(package='diagnostic_aggregator', executable='aggregator_node',
                            name='analyzers', output='screen', additional_env=env,
                            parameters=[PathJoinSubstitution([share, 'config',
                                                              'diagnostics_analyzers.yaml']),
                                        {'use_sim_time': use_sim_time}]))
    if 'rviz2' in started:
        actions.append(Node(package='rviz2', executable='rviz2', name='rviz2', namespace=namespace,
                            additional_env=env,
                            arguments=['-d', PathJoinSubstitution([share, 'config', 'lightvla.rviz'])],
                            parameters=[{'use_sim_time': use_sim_time}]))
    return actions


def generate_launch_description():
    """Declared arguments, then the nodes."""
    declared = [DeclareLaunchArgument(name, default_value=default, description=description)
                for name, default, description in ARGUMENTS]
    return LaunchDescription(declared + [OpaqueFunction(function=_nodes)])
