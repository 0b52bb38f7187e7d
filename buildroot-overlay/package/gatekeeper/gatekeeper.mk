################################################################################
#
# gatekeeper
#
################################################################################

# The crate is a member of the Cargo workspace that holds this br2-external
# tree, one directory up. The whole workspace is synced so that its
# Cargo.toml (release profile) and Cargo.lock apply; its build outputs are
# not sources.
GATEKEEPER_SITE = $(BR2_EXTERNAL_AIRGAP_VAULT_PATH)/..
GATEKEEPER_SITE_METHOD = local
GATEKEEPER_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude /target \
	--exclude /out \
	--exclude /fuzz
# Declared in the workspace Cargo.toml; the workspace has no license file.
GATEKEEPER_LICENSE = Apache-2.0

GATEKEEPER_TRUST_ROOT = $(call qstrip,$(BR2_PACKAGE_GATEKEEPER_TRUST_ROOT))

ifeq ($(BR2_PACKAGE_GATEKEEPER)$(BR_BUILDING),yy)
ifeq ($(GATEKEEPER_TRUST_ROOT),)
$(error BR2_PACKAGE_GATEKEEPER_TRUST_ROOT is empty: set it to the \
	root.toml to bake into the image (vaultctl root init makes one))
endif
ifeq ($(wildcard $(GATEKEEPER_TRUST_ROOT)),)
$(error BR2_PACKAGE_GATEKEEPER_TRUST_ROOT=$(GATEKEEPER_TRUST_ROOT): \
	no such file)
endif
endif

# Only the gatekeeper binary of the workspace, linked statically as
# image/build.sh does (the target rustflags do not reach build scripts,
# which run on the host), with the workspace's release profile: the cargo
# infrastructure otherwise derives LTO, codegen units and the optimisation
# level from Buildroot's options.
GATEKEEPER_CARGO_BUILD_OPTS = --package gatekeeper --bin gatekeeper
GATEKEEPER_RUSTFLAGS = \
	-C target-feature=+crt-static \
	--remap-path-prefix=$(GATEKEEPER_DIR)=/build \
	--remap-path-prefix=$(BR_CARGO_HOME)=/cargo
GATEKEEPER_CARGO_ENV = \
	CARGO_TARGET_$(call UPPERCASE,$(RUSTC_TARGET_NAME))_RUSTFLAGS="$(GATEKEEPER_RUSTFLAGS)" \
	CARGO_PROFILE_RELEASE_LTO=true \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
	CARGO_PROFILE_RELEASE_OPT_LEVEL=3

# The cargo infrastructure vendors the crates at download time, a step the
# local site method skips. Fetch them (Cargo.lock pins each by checksum)
# into Buildroot's shared cargo home, where the --offline build finds them.
define GATEKEEPER_CARGO_FETCH
	cd $(GATEKEEPER_SRCDIR) && \
		$(TARGET_MAKE_ENV) CARGO_HOME=$(BR_CARGO_HOME) \
		cargo fetch --locked --manifest-path Cargo.toml
endef
GATEKEEPER_PRE_BUILD_HOOKS += GATEKEEPER_CARGO_FETCH

GATEKEEPER_PROFILE = $(if $(BR2_ENABLE_DEBUG),debug,release)
GATEKEEPER_BIN = $(@D)/target/$(RUSTC_TARGET_NAME)/$(GATEKEEPER_PROFILE)/gatekeeper

# The kernel runs /init from the initramfs: the gatekeeper is PID 1. The
# default cargo install (to /usr/bin) is replaced.
define GATEKEEPER_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(GATEKEEPER_BIN) $(TARGET_DIR)/init
	$(INSTALL) -D -m 0644 $(GATEKEEPER_TRUST_ROOT) \
		$(TARGET_DIR)/etc/vault/root.toml
endef

$(eval $(cargo-package))
