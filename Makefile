# `make test` and `make demo` set everything up on a fresh machine: they create .venv when missing and install
# the package with its extras. With a ROS 2 distro sourced ($ROS_DISTRO set) the venv sees the system rclpy and
# the PyPI ROS 2 wheels are not installed.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS := $(if $(ROS_DISTRO),dev,ros,dev)
VENV_FLAGS := $(if $(ROS_DISTRO),--system-site-packages,)
STAMP := $(VENV)/.installed-$(shell cat setup.py | md5sum | cut -c1-12)-$(if $(ROS_DISTRO),$(ROS_DISTRO),pypi)
TINY := build/tiny-checkpoint
PIP_QUIET := grep -v -e "is ignored: it is neither a file nor a directory" || true

.PHONY: all install test demo tiny bench clean

all: test

$(PY):
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)

$(STAMP): $(PY) setup.py
	$(PY) -m pip install -q --upgrade pip 2>&1 | $(PIP_QUIET)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]" 2>&1 | $(PIP_QUIET)
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

$(TINY)/config.json: $(STAMP)
	$(VENV)/bin/lightvla make-tiny $(TINY)

tiny: $(TINY)/config.json

test: $(STAMP)
	$(PY) -m pytest -q test

demo: $(TINY)/config.json
	$(VENV)/bin/lightvla predict --checkpoint $(TINY) --image test/data/scene_third_person.png --image test/data/scene_wrist.png \
		--instruction "pick up the red cube" --proprio 0,0,0,0,0,0,0,0 --device auto

clean:
	rm -rf $(VENV) build *.egg-info
