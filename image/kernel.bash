# The minimal kernel (image/build.sh KERNEL=minimal): the pinned Debian kernel release, built
# from Debian's linux-source package with buildroot-overlay/board/vault/linux.config.
# Sourced by image/build.sh; expects die().

# minimal_kernel SOURCE_DEB CONFIG CACHE_DIR WORKDIR -> prints the path of the bzImage; its
# kernel release is in the file beside it, "$path.release".
#
# A build takes minutes, so the result is kept in CACHE_DIR under a key made of everything that
# goes into it: the source package, the configuration, the compiler and this recipe. Nothing
# else goes in: the build stamp is the package's upload date, the builder's name is fixed, and
# the build happens in the tree (no absolute paths; no debug information).
minimal_kernel() {
  local deb=$1 config=$2 cache=$3 work=$4
  local key dir
  key=$( { sha256sum "$deb" "$config" | cut -d' ' -f1; gcc --version | head -1; ld --version | head -1; sed -n '/^minimal_kernel()/,/^}/p' "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)
  dir=$cache/$key
  if [ -f "$dir/bzImage.release" ] && [ -z "${KERNEL_REBUILD:-}" ]; then
    # The cache is a directory anyone with this account can write: its bytes must still be
    # the ones this build made, or it is built again.
    if (cd "$dir" && sha256sum --quiet -c bzImage.sha256 >&2); then
      echo "image: minimal kernel from the cache ($dir)" >&2
      echo "$dir/bzImage"
      return
    fi
    echo "image: the cached minimal kernel in $dir does not match its checksum; building it again" >&2
  fi
  echo "image: building the minimal kernel from $(basename "$deb") (minutes; kept in $dir)" >&2
  mkdir -p "$work"
  local pkg
  pkg=$(dpkg-deb -f "$deb" Package)
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" "./usr/src/$pkg.tar.xz" "./usr/share/doc/$pkg/changelog.Debian.gz"
  tar -x -C "$work" -f "$work/usr/src/$pkg.tar.xz"
  local src=$work/$pkg
  [ -f "$src/Makefile" ] || die "$(basename "$deb"): no kernel tree $pkg/ inside"
  local stamp
  stamp=$(zcat "$work/usr/share/doc/$pkg/changelog.Debian.gz" | sed -n 's/^ -- .*>  //p' | head -1)
  [ -n "$stamp" ] || die "$(basename "$deb"): no upload date in its changelog"
  # The kernel's own make, clear of any make this build runs under (`make test`): its flags
  # would make it print directories into what is read back, and bring its job server.
  kmake() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory -s -C "$src" "$@"; }
  cp "$config" "$src/.config"
  kmake olddefconfig >&2
  # Every symbol the configuration names must have taken its value: a newer kernel release
  # that renamed or hid one would otherwise build something else, silently.
  local line symbol missing=()
  while read -r line; do
    case $line in
      CONFIG_*=*) grep -qxF "$line" "$src/.config" || missing+=("$line") ;;
      "# CONFIG_"*" is not set")
        symbol=${line#\# }
        symbol=${symbol%% *}
        ! grep -q "^$symbol=" "$src/.config" || missing+=("$line")
        ;;
    esac
  done < "$config"
  ((${#missing[@]} == 0)) || die "kernel configuration: $(basename "$config") asks for ${missing[*]}, which this kernel release does not take"
  KBUILD_BUILD_TIMESTAMP=$stamp KBUILD_BUILD_USER=vault KBUILD_BUILD_HOST=airgap-vault KBUILD_BUILD_VERSION=1 \
    kmake -j"$(nproc)" bzImage >&2 || die "the minimal kernel did not build"
  local release
  release=$(kmake kernelrelease)
  [[ $release =~ ^[0-9]+\.[0-9]+\.[0-9]+-vault$ ]] || die "the minimal kernel's release is \`$release\`, not VERSION-vault"
  # Into the cache whole or not at all: an interrupted copy must not pass for a build.
  rm -rf "$dir" "$dir.new"
  mkdir -p "$dir.new"
  install -m 0644 "$src/arch/x86/boot/bzImage" "$dir.new/bzImage"
  install -m 0644 "$src/.config" "$dir.new/config"
  echo "$release" > "$dir.new/bzImage.release"
  (cd "$dir.new" && sha256sum bzImage config bzImage.release > bzImage.sha256)
  mv "$dir.new" "$dir"
  rm -rf "$work"
  echo "$dir/bzImage"
}
