"""Launch lightvla_node, optionally with the demo camera, the diagnostics aggregator and rviz.

    ros2 launch lightvla_ros lightvla.launch.py checkpoint:=/path/to/checkpoint
    ros2 launch lightvla_ros lightvla.launch.py checkpoint:=/tmp/tiny demo_camera:=true \
        start_aggregator:=true rviz:=true

The node's parameters come from ``params_file`` (default: the package's config/lightvla.yaml); the
checkpoint and device arguments override it when given.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'lightvla_ros'

ARGUMENTS = (
    ('params_file', PathJoinSubstitution([FindPackageShare(PACKAGE), 'config', 'lightvla.yaml']),
     'Parameter file of lightvla_node.'),
    ('checkpoint', '', 'Checkpoint folder; overrides the parameter file when not empty.'),
    ('device', '', 'auto, cpu, cuda or cuda:N; overrides the parameter file when not empty.'),
    ('namespace', '', 'Namespace of the nodes (the instruction topic is then <ns>/instruction).'),
    ('use_sim_time', 'false', 'Use /clock (for rosbag replay with --clock).'),
    ('demo_camera', 'false',
     'Also start lightvla_demo_camera (synthetic camera frames and state).'),
    ('start_aggregator', 'false',
     'Start diagnostic_aggregator with config/diagnostics_analyzers.yaml '
     '(for rqt_robot_monitor).'),
    ('rviz', 'false',
     'Start rviz2 with config/lightvla.rviz (debug image and predicted EEF path).'),
)


def _nodes(context, *args, **kwargs):
    """Build the nodes once the arguments are known (so empty overrides can be left out)."""
    namespace = LaunchConfiguration('namespace').perform(context)
    use_sim_time = LaunchConfiguration('use_sim_time').perform(context).lower() in ('true', '1')
    overrides = {'use_sim_time': use_sim_time}
    for name in ('checkpoint', 'device'):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    share = FindPackageShare(PACKAGE)
    return [
        Node(package=PACKAGE, executable='lightvla_node', name='lightvla_node',
             namespace=namespace, output='screen', emulate_tty=True,
             parameters=[LaunchConfiguration('params_file'), overrides]),
        Node(package=PACKAGE, executable='lightvla_demo_camera', name='lightvla_demo_camera',
             namespace=namespace, output='screen', parameters=[{'use_sim_time': use_sim_time}],
             condition=IfCondition(LaunchConfiguration('demo_camera'))),
        Node(package='diagnostic_aggregator', executable='aggregator_node', name='analyzers',
             output='screen',
             parameters=[PathJoinSubstitution([share, 'config', 'diagnostics_analyzers.yaml']),
                         {'use_sim_time': use_sim_time}],
             condition=IfCondition(LaunchConfiguration('start_aggregator'))),
        Node(package='rviz2', executable='rviz2', name='rviz2', namespace=namespace,
             arguments=['-d', PathJoinSubstitution([share, 'config', 'lightvla.rviz'])],
             parameters=[{'use_sim_time': use_sim_time}],
             condition=IfCondition(LaunchConfiguration('rviz'))),
    ]


def generate_launch_description():
    """Declared arguments, then the nodes."""
    declared = [DeclareLaunchArgument(name, default_value=default, description=description)
                for name, default, description in ARGUMENTS]
    return LaunchDescription(declared + [OpaqueFunction(function=_nodes)])
