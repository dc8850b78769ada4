"""Decisions of launch/lightvla.launch.py that need no launch API, so they are testable without ROS.

Optional helper nodes (the diagnostics aggregator, rviz2) come from packages that a ROS install may lack;
``ros2 launch`` then fails the whole launch with "package ... not found" and leaves the nodes already started
running. The launch file asks :func:`plan_optional_nodes` first and starts only what is installed, saying what
is missing and how to install it. :func:`fastdds_profile` picks the Fast DDS transport profile for the nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROFILE_VARIABLE = 'FASTDDS_DEFAULT_PROFILES_FILE'
TRUE_WORDS = ('true', '1')
FALSE_WORDS = ('false', '0')


@dataclass(frozen=True)
class OptionalNode:
    """A helper node behind a launch argument, and where its package comes from."""

    argument: str
    package: str
    apt_suffix: str  # ros-$ROS_DISTRO-<apt_suffix>
    purpose: str


OPTIONAL_NODES = (
    OptionalNode('start_aggregator', 'diagnostic_aggregator', 'diagnostic-aggregator',
                 'the diagnostics aggregator for rqt_robot_monitor'),
    OptionalNode('rviz', 'rviz2', 'rviz2', 'rviz2 with config/lightvla.rviz'),
)


def is_true(text: str, argument: str) -> bool:
    """A boolean launch argument, read as ``IfCondition`` reads it; anything else is refused by name."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"launch argument {argument}:={text!r} must be true or false")


def package_installed(package: str) -> bool:
    """Whether the ament index (``AMENT_PREFIX_PATH``) knows ``package``, as ``ros2 launch`` will look it up.

    An unset ``AMENT_PREFIX_PATH`` (ament_index_python raises OSError) means that no package is installed.
    """
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix(package)
    except (PackageNotFoundError, OSError):
        return False
    return True


def missing_package_warning(optional: OptionalNode) -> str:
    return (f"{optional.argument}:=true: package '{optional.package}' is not installed (not in the ament "
            f"index on AMENT_PREFIX_PATH), so "
            f"{optional.purpose} is not started (the rest of the launch goes on). Install it with "
            f"`sudo apt install ros-$ROS_DISTRO-{optional.apt_suffix}` and source the ROS setup again.")


def plan_optional_nodes(arguments: Mapping[str, str],
                        installed: Callable[[str], bool] = package_installed
                        ) -> tuple[list[OptionalNode], list[str]]:
    """The requested optional nodes whose packages are installed, and one warning per missing package."""
    start, warnings = [], []
    for optional in OPTIONAL_NODES:
        if not is_true(arguments.get(optional.argument, 'false'), optional.argument):
            continue
        if installed(optional.package):
            start.append(optional)
        else:
            warnings.append(missing_package_warning(optional))
    return start, warnings


def fastdds_profile(argument: str, shipped: Path, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """The profile file to give the started nodes (None: leave their environment alone) and a line saying so.

    ``argument`` is true (the shipped profile, unless the environment already names one: a user's own
    choice wins), false, or the path of another profile.
    """
    word = argument.strip().lower()
    existing = environ.get(PROFILE_VARIABLE, '')
    if word in FALSE_WORDS or not word:
        return None, 'fastdds_profile:=false: the nodes keep the Fast DDS settings of the environment'
    if word in TRUE_WORDS:
        if existing:
            return None, (f'fastdds_profile: keeping {PROFILE_VARIABLE}={existing} from the environment '
                          f'(the shipped {shipped.name} is not applied)')
        return str(shipped), (f'fastdds_profile: {PROFILE_VARIABLE}={shipped} for the started nodes (16 MiB '
                              'shared-memory segment; start camera drivers with it too)')
    path = Path(argument.strip()).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f'fastdds_profile:={argument}: no such file (true, false or the path of a '
                                'Fast DDS XML profile)')
    return str(path.resolve()), f'fastdds_profile: {PROFILE_VARIABLE}={path.resolve()} for the started nodes'
