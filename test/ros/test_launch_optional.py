"""What the launch file starts when optional packages are missing, and which Fast DDS profile it applies.

``start_aggregator:=true`` without diagnostic_aggregator installed used to fail the whole launch ("package
'diagnostic_aggregator' not found") and leave lightvla_node running. Now the missing package is named with its
install command and everything else starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lightvla_ros.ros.core.launch_plan import (
    OPTIONAL_NODES,
    PROFILE_VARIABLE,
    fastdds_profile,
    is_true,
    package_installed,
    plan_optional_nodes,
)

SHIPPED = Path('/opt/ros/share/lightvla_ros/config/fastdds_camera_transport.xml')


def installed_only(*packages: str):
    asked = []

    def installed(package: str) -> bool:
        asked.append(package)
        return package in packages

    installed.asked = asked
    return installed


def test_nothing_optional_requested_checks_nothing():
    installed = installed_only()
    assert plan_optional_nodes({'start_aggregator': 'false', 'rviz': 'false'}, installed) == ([], [])
    assert plan_optional_nodes({}, installed) == ([], [])
    assert installed.asked == []


def test_installed_packages_are_started():
    start, warnings = plan_optional_nodes({'start_aggregator': 'true', 'rviz': 'True'},
                                          installed_only('diagnostic_aggregator', 'rviz2'))
    assert [node.package for node in start] == ['diagnostic_aggregator', 'rviz2'] and warnings == []


@pytest.mark.parametrize('missing,argument,apt', [
    ('diagnostic_aggregator', 'start_aggregator', 'apt install ros-$ROS_DISTRO-diagnostic-aggregator'),
    ('rviz2', 'rviz', 'apt install ros-$ROS_DISTRO-rviz2'),
])
def test_a_missing_package_is_named_with_its_install_command_and_the_rest_starts(missing, argument, apt):
    present = {node.package for node in OPTIONAL_NODES} - {missing}
    start, warnings = plan_optional_nodes({'start_aggregator': 'true', 'rviz': 'true'}, installed_only(*present))
    assert [node.package for node in start] == sorted(present, key=lambda p: p != 'diagnostic_aggregator')
    assert len(warnings) == 1
    assert f"{argument}:=true: package '{missing}' is not installed" in warnings[0]
    assert 'AMENT_PREFIX_PATH' in warnings[0]
    assert apt in warnings[0] and 'the rest of the launch goes on' in warnings[0]


def test_both_missing_gives_two_warnings_and_no_optional_node():
    start, warnings = plan_optional_nodes({'start_aggregator': '1', 'rviz': '1'}, installed_only())
    assert start == [] and len(warnings) == 2


@pytest.mark.parametrize('text,value', [('true', True), ('TRUE', True), ('1', True), ('false', False),
                                        (' False ', False), ('0', False)])
def test_boolean_arguments_read_like_ifcondition(text, value):
    assert is_true(text, 'rviz') is value


def test_a_misspelt_boolean_is_refused_by_name():
    with pytest.raises(ValueError, match="rviz:='yes' must be true or false"):
        plan_optional_nodes({'rviz': 'yes'}, installed_only('rviz2'))


def test_packages_are_looked_up_in_the_ament_index(tmp_path, monkeypatch):
    pytest.importorskip('ament_index_python')
    marker = tmp_path / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'diagnostic_aggregator'
    marker.parent.mkdir(parents=True)
    marker.touch()
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(tmp_path))
    assert package_installed('diagnostic_aggregator')
    assert not package_installed('rviz2')
    monkeypatch.delenv('AMENT_PREFIX_PATH')  # no ROS sourced: nothing is installed
    assert not package_installed('diagnostic_aggregator')


def test_the_shipped_profile_is_applied_by_default():
    profile, note = fastdds_profile('true', SHIPPED, {})
    assert profile == str(SHIPPED) and str(SHIPPED) in note


def test_a_profile_named_by_the_environment_is_kept():
    profile, note = fastdds_profile('true', SHIPPED, {PROFILE_VARIABLE: '/etc/my_dds.xml'})
    assert profile is None and '/etc/my_dds.xml' in note and 'keeping' in note


def test_the_profile_can_be_switched_off():
    profile, note = fastdds_profile('false', SHIPPED, {})
    assert profile is None and 'false' in note


def test_another_profile_file_can_be_named(tmp_path):
    mine = tmp_path / 'mine.xml'
    mine.write_text('<profiles/>')
    assert fastdds_profile(str(mine), SHIPPED, {PROFILE_VARIABLE: '/etc/other.xml'})[0] == str(mine)
    with pytest.raises(FileNotFoundError, match='no such file'):
        fastdds_profile(str(tmp_path / 'absent.xml'), SHIPPED, {})
