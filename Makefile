# Two commands matter: `make demo` and `make test` (see README.md). Both work as root on a
# fresh Debian bookworm machine: they install what they need first.
PY ?= python3
DEMO_ROOT ?= /var/tmp/pybuild-demo
APT_PACKAGES = busybox-static skopeo umoci docker-registry apache2-utils openssl openssh-client file git

FUZZ_SECONDS ?= 180

.PHONY: deps demo test bench fuzz clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'

demo: deps
	rm -rf $(DEMO_ROOT)/rootfs
	$(PY) -m pybuild.testing rootfs $(DEMO_ROOT)/rootfs
	$(PY) -m pybuild --root $(DEMO_ROOT)/store import $(DEMO_ROOT)/rootfs busybox:local
	$(PY) -m pybuild --root $(DEMO_ROOT)/store -f examples/hello/Dockerfile -t hello:1 examples/hello
	$(PY) -m pybuild --root $(DEMO_ROOT)/store run --rm hello:1

test: deps
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: deps
	$(PY) bench/run.py

# Not part of `make test` or CI: hypothesis feeds the Dockerfile frontend generated text
# for FUZZ_SECONDS and reports any exception that is not a DefinitionError.
fuzz: deps
	$(PY) -m pip install -q --disable-pip-version-check -e '.[fuzz]'
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) fuzz/fuzz_parser.py

clean:
	rm -rf $(DEMO_ROOT)
