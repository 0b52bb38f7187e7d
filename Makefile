# The README's commands. Each target installs what it needs (scripts/ensure-tools.sh).
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
FUZZ_SECONDS ?= 60
ROOT ?=
VARIANT ?= production
KERNEL ?= debian

.PHONY: all tools build deb test-deb test test-keys test-image test-image-minimal test-minimal test-minimal-suite reproducible reproducible-rebuild reproducible-minimal lint demo bench soak image pins fuzz eval-signals clean

all: build

tools:
	@scripts/ensure-tools.sh

build: tools
	$(CARGO) build --workspace --release --locked

# Unit, property and integration tests of every crate, the ransomware signals' evaluation on
# small datasets (signals-eval --quick), a short fuzz run of each decoder
# (so the targets keep building and the seeds keep passing), rustfmt, clippy and shellcheck as
# errors, the Buildroot tree's checks (and that they refuse what they must), then the test image
# built twice (reproducible), vaultctl's Debian package installed and removed, the QEMU suite
# booting the image, and the image with the minimal kernel through the suite's boot, USB and
# push tests. scripts/test.sh runs the stages and times each; the minimal image and the
# reproducible rebuild run beside the QEMU suite, on the core its guest leaves idle.
test: tools
	scripts/test.sh

# The Debian package of vaultctl (out/vaultctl_<version>_<arch>.deb): the binary, man pages,
# completions, the systemd push units, an example config.
deb: tools
	scripts/deb.sh

# The package installed with dpkg -i, checked where Debian looks, its timer unit run by a real
# systemd (a container booted from this host's system) to push a profile, and removed (root
# only; after `cargo build --workspace`).
test-deb: tools
	scripts/test-deb.sh

# The test image again with KERNEL=minimal (out/minimal), the same test keys.
test-image-minimal: test-keys
	KERNEL=minimal ROOT=out/test-keys/root.toml OUT=$(CURDIR)/out/minimal image/build.sh

# What the kernel changes: booting (every disk bus, through firmware), the image's contents,
# USB sticks, and a push through its network stack. Secure Boot is left to the Debian run:
# the firmware checks the UKI's signature whatever kernel it holds, and the firmware boot
# here already runs the minimal kernel's EFI stub.
MINIMAL_SUITE = VAULT_IMAGE_DIR=$(CURDIR)/out/minimal VAULT_TEST_KEYS=$(CURDIR)/out/test-keys $(CARGO) test -p qemu-tests --locked
test-minimal: test-image-minimal
	$(MAKE) test-minimal-suite

# The suite alone, on the minimal image already in out/minimal.
test-minimal-suite:
	$(MINIMAL_SUITE) --test boot --test image_contents --test usb_policy -- --test-threads=1 --nocapture --skip under_secure_boot
	$(MINIMAL_SUITE) --test scenarios -- --test-threads=1 --nocapture push_receipt_early_close_restore_and_an_incremental_push

# The image the QEMU suite boots: a trust root from test keys (out/test-keys, made once).
test-image: test-keys
	ROOT=out/test-keys/root.toml OUT=$(CURDIR)/out image/build.sh

test-keys: tools
	$(CARGO) build --release --locked -p vaultctl
	scripts/test-keys.sh out/test-keys

# Two builds from the same inputs, the second with a fresh cargo target dir, must give the
# same SHA256SUMS.
reproducible: test-image
	$(MAKE) reproducible-rebuild

# The second build of `reproducible` alone, against the test image already in out/.
reproducible-rebuild:
	ROOT=out/test-keys/root.toml OUT=$(CURDIR)/out/rebuild CARGO_TARGET_DIR=$(CURDIR)/target/rebuild image/build.sh
	diff out/SHA256SUMS out/rebuild/SHA256SUMS
	@echo "reproducible: two builds, identical SHA256SUMS"

# The minimal-kernel image twice, the second time compiling the kernel again (not from the
# cache) in a fresh tree: same SHA256SUMS. Not in `make test` (the kernel build is most of
# the time it takes); run after changing linux.config or image/kernel.bash.
reproducible-minimal: test-image-minimal
	KERNEL=minimal KERNEL_REBUILD=1 ROOT=out/test-keys/root.toml OUT=$(CURDIR)/out/minimal-rebuild image/build.sh
	diff out/minimal/SHA256SUMS out/minimal-rebuild/SHA256SUMS
	@echo "reproducible-minimal: two kernel builds, identical SHA256SUMS"

# rustfmt's check (rustfmt.toml), clippy with the workspace's lints as errors, and
# shellcheck over every script.
lint: tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	scripts/lint-shell.sh

# The ransomware signals (vault-core's push::signals) against generated datasets and
# simulated attacks: detection rates and false alarms, written to target/eval-signals.md;
# fails when a target is missed (README, "Ransomware signals: evaluation").
eval-signals: tools
	$(CARGO) run --release --locked -p signals-eval

# Coverage-guided fuzzing of bundle decoding (cargo-fuzz; stable toolchain via RUSTC_BOOTSTRAP).
fuzz: tools
	scripts/fuzz.sh $(FUZZ_SECONDS)

# The whole product, narrated: demo keys and trust root, the image built with it, booted in
# QEMU, a policy stick, a push in the window, the receipt, the link going down, an offline
# restore from the vault's disk. Needs root (network namespace, tap). KERNEL=minimal for the
# image with the minimal kernel.
demo: tools
	$(CARGO) build --release --locked -p vaultctl -p qemu-tests
	scripts/test-keys.sh out/demo/keys
	KERNEL="$(KERNEL)" ROOT=out/demo/keys/root.toml OUT=$(CURDIR)/out/demo/image image/build.sh
	VAULT_IMAGE_DIR=$(CURDIR)/out/demo/image VAULT_TEST_KEYS=$(CURDIR)/out/demo/keys target/release/demo

# Push vs rsync (daemon mode over TCP) and sha256sum on a generated 2 GiB dataset, between
# two network namespaces; 8 concurrent pushes for the gatekeeper's peak RSS. Needs root.
bench: tools
	scripts/bench.sh

# The long versions of what `make test` runs short: power cuts after every seal step, ten
# rounds (70 cuts, plus one mid-push; `make test` runs three), on the test image. Needs root.
soak: test-image
	POWER_CUT_ROUNDS=10 $(CARGO) test -p qemu-tests --locked --test scenarios -- --test-threads=1 --nocapture power_cuts_at_every_seal_step

# The appliance image under out/ (see image/build.sh). ROOT is the trust root to bake in;
# KERNEL=minimal builds the kernel from Debian's source package, every driver built in.
image: tools
	ROOT="$(ROOT)" VARIANT="$(VARIANT)" KERNEL="$(KERNEL)" image/build.sh

# Moves image/packages.lock to the Debian package versions served now (review the diff).
pins: tools
	image/pins.sh

clean:
	$(CARGO) clean
