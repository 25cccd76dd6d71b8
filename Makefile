# `make demo`: set up and train TinySplat on the bundled real scene (CPU).
# `make test`: set up and run the whole test suite (what CI runs).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SCENE ?= ../shared/data/tumbler

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@# libusb: open3d, which ns-export imports; ffmpeg: ns-render; chromium: the viewer and compare tests;
	@# npm: the .ply tests' outside reader (splat-transform); clang, the aarch64 cross-compiler and qemu-user:
	@# the tests of the kernels as macOS and ARM64 machines build them.
	@# Without apt-get (macOS, Fedora) one line says what to install; the demo needs none of them.
	@missing=""; \
	if [ "$$(uname)" = Linux ]; then PATH="$$PATH:/sbin:/usr/sbin" ldconfig -p 2>/dev/null | grep -q libusb-1.0.so.0 \
	  || missing=" libusb-1.0-0"; fi; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v clang++ >/dev/null || missing="$$missing clang"; \
	command -v aarch64-linux-gnu-g++ >/dev/null || missing="$$missing g++-aarch64-linux-gnu"; \
	command -v qemu-aarch64 >/dev/null || missing="$$missing qemu-user"; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null; then sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y -qq $$missing; \
	elif [ -n "$$missing" ]; then echo "make: no apt-get here: for ns-render and the tests, install$$missing" \
	  "(Debian's names) with your package manager (brew, dnf); the demo runs without them"; fi
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1 nerfstudio==1.1.5
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

demo: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh $(SCENE)

test: setup
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile --durations=20 tests

bench: setup
	$(VENV)/bin/python benchmarks/rasterizer.py

clean:
	rm -rf $(VENV) outputs
