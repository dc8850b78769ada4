"""config/fastdds_camera_transport.xml: a Fast DDS profile whose shared-memory segment holds camera frames.

Stock Fast DDS gives each participant a 512 KiB segment; a 640x480 rgb8 frame is 900 KiB, and two 30 Hz
cameras lost 49-88% of their frames through it (benchmarks/transport_loss.py; none with this profile).
"""

from __future__ import annotations

import importlib.util
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / 'config' / 'fastdds_camera_transport.xml'
NS = {'dds': 'http://www.eprosima.com'}
FRAME_BYTES = 640 * 480 * 3


def _benchmark():
    spec = importlib.util.spec_from_file_location('transport_loss', ROOT / 'benchmarks' / 'transport_loss.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_profile_is_a_default_participant_profile_with_a_large_shm_segment():
    root = ET.parse(PROFILE).getroot()
    assert root.tag == '{http://www.eprosima.com}profiles'
    transports = {d.findtext('dds:transport_id', namespaces=NS): d
                  for d in root.findall('dds:transport_descriptors/dds:transport_descriptor', NS)}
    kinds = {tid: d.findtext('dds:type', namespaces=NS) for tid, d in transports.items()}
    assert sorted(kinds.values()) == ['SHM', 'UDPv4']  # UDP stays for discovery and other hosts
    shm = next(d for d in transports.values() if d.findtext('dds:type', namespaces=NS) == 'SHM')
    assert int(shm.findtext('dds:segment_size', namespaces=NS)) >= 16 * FRAME_BYTES

    participants = root.findall('dds:participant', NS)
    assert len(participants) == 1 and participants[0].get('is_default_profile') == 'true'
    rtps = participants[0].find('dds:rtps', NS)
    used = [t.text for t in rtps.findall('dds:userTransports/dds:transport_id', NS)]
    assert sorted(used) == sorted(transports)
    assert rtps.findtext('dds:useBuiltinTransports', namespaces=NS) == 'false'


def test_a_publisher_and_a_subscriber_with_the_profile_exchange_frames():
    pytest.importorskip('rclpy')
    pytest.importorskip('sensor_msgs')
    case = _benchmark().run_case('sensor_data', 'both', seconds=1.0)
    assert case.errors == []
    assert len(case.sent) == 2 and all(sent >= 25 for sent in case.sent)
    assert all(received > 0 for received in case.received), case
    # Fast DDS read the profile: each process made a 16 MiB segment beside any default one
    assert sum(size >= 16 for size in case.shm_segments_mib) >= 2, case.shm_segments_mib
