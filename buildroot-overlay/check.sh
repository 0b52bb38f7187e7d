#!/usr/bin/env bash
# Structural checks of this br2-external tree that need no Buildroot checkout, for CI:
#   - the tree's layout (Buildroot manual, "Keeping customizations outside of Buildroot"):
#     external.desc, Config.in, external.mk, package/<pkg>/{Config.in,<pkg>.mk} in pairs;
#   - the rules of Buildroot's utils/check-package that apply here: the .mk header block,
#     variables prefixed by the package name, Config.in indentation and help text
#     (<tab><2 spaces>, 62 characters), .hash fields, BR2_DOWNLOAD_FORCE_CHECK_HASHES in
#     defconfigs, no trailing whitespace, newline at end of file, no blank last line, no
#     two blank lines in a row, ASCII only, executable bits;
#   - every $(BR2_EXTERNAL_<NAME>_PATH)/... a defconfig names exists in the tree;
#   - the appliance's invariants in the defconfig (no init but the gatekeeper, no busybox,
#     no shell) and in the kernel configuration;
#   - the defconfig names the Buildroot release it is kept against, and pins the kernel to the
#     upstream release of the Debian kernel in image/packages.lock (headers as the kernel's);
#   - the board scripts parse (bash -n; shellcheck too where it is installed);
#   - post-image.sh and image/build.sh both make the UKI and the disk with board/vault/uki-disk.bash.
# Prints one line per problem and exits 1 if there is any; exits 0 otherwise.
#
# usage: buildroot-overlay/check.sh
set -euo pipefail
TREE=$(cd "$(dirname "$0")" && pwd)
cd "$TREE"
BUILD_SH=$TREE/../image/build.sh
PACKAGES_LOCK=$TREE/../image/packages.lock

problems=0
fail() {
  echo "check.sh: $*" >&2
  problems=$((problems + 1))
}

# ---- external.desc, Config.in, external.mk -------------------------------------------------
NAME=
if [ ! -f external.desc ]; then
  fail "external.desc: missing"
else
  NAME=$(sed -n 's/^name: \{1,\}\([A-Za-z0-9_]\{1,\}\)$/\1/p' external.desc)
  if [ "$(grep -c '^name:' external.desc)" != 1 ] || [ -z "$NAME" ]; then
    fail "external.desc: needs exactly one 'name: <[A-Za-z0-9_]+>' line"
  fi
  grep -Eq '^desc: +[^ ].*$' external.desc || fail "external.desc: needs a 'desc: <one line>' line"
  if grep -Evq '^(name|desc): ' external.desc; then
    fail "external.desc: only the keywords 'name' and 'desc' are recognised: $(grep -Ev '^(name|desc): ' external.desc | head -n1)"
  fi
fi
VAR="BR2_EXTERNAL_${NAME:-NAME}_PATH"

[ -f Config.in ] || fail "Config.in: missing"
[ -f external.mk ] || fail "external.mk: missing"
if [ -f external.mk ]; then
  grep -Fqx "include \$(sort \$(wildcard \$($VAR)/package/*/*.mk))" external.mk ||
    fail "external.mk: must include \$(sort \$(wildcard \$($VAR)/package/*/*.mk))"
fi
if [ -f Config.in ]; then
  while read -r line; do
    path=$(sed -n "s|^source \"\\\$$VAR/\\(.*\\)\"\$|\\1|p" <<<"$line")
    if [ -z "$path" ]; then
      fail "Config.in: '$line': source files through \"\$$VAR/...\" (a relative path is not found)"
    elif [ ! -f "$path" ]; then
      fail "Config.in: '$line': no file $path"
    fi
  done < <(grep -E '^[[:space:]]*source[[:space:]]' Config.in || true)
fi

# ---- packages --------------------------------------------------------------------------------
shopt -s nullglob
for dir in package/*/; do
  dir=${dir%/}
  pkg=$(basename "$dir")
  upper=$(tr 'a-z-' 'A-Z_' <<<"$pkg")
  cfg=$dir/Config.in
  mk=$dir/$pkg.mk
  [ -f "$cfg" ] || fail "$dir: has no Config.in (each package needs Config.in and $pkg.mk)"
  [ -f "$mk" ] || fail "$dir: has no $pkg.mk (each package needs Config.in and $pkg.mk)"
  for other in "$dir"/*.mk; do
    [ "$other" = "$mk" ] || fail "$other: a package's .mk is named after its directory ($mk)"
  done
  if [ -f Config.in ] && ! grep -Fqx "source \"\$$VAR/package/$pkg/Config.in\"" Config.in; then
    fail "Config.in: does not source package/$pkg/Config.in"
  fi
  if [ -f "$cfg" ] && ! grep -Eq "^(menu)?config BR2_PACKAGE_${upper}\$" "$cfg"; then
    fail "$cfg: does not define BR2_PACKAGE_$upper"
  fi
  [ -f "$mk" ] || continue
  # The header block (manual, "Writing rules: the .mk file"; check-package PackageHeader).
  hashes=$(printf '#%.0s' {1..80})
  expected=$(printf '%s\n#\n# %s\n#\n%s\n' "$hashes" "$pkg" "$hashes")
  [ "$(head -n 5 "$mk")" = "$expected" ] ||
    fail "$mk: lines 1-5 must be 80 '#', '#', '# $pkg', '#', 80 '#'"
  [ -z "$(sed -n 6p "$mk")" ] || fail "$mk: line 6 must be blank"
  grep -Eq '^\$\(eval \$\((host-)?[a-z0-9]+-package\)\)$' "$mk" ||
    fail "$mk: no \$(eval \$(<infrastructure>-package)) line"
  # Variables belong to the package (check-package TypoInPackageVariable).
  while IFS=: read -r lineno var; do
    fail "$mk:$lineno: variable $var is not prefixed by ${upper}_"
  done < <(awk -v p="$upper" '
    { line = $0; sub(/^define[ \t]+/, "", line) }
    line ~ /^[A-Z0-9_]+_[A-Z0-9_]+/ {
      match(line, /^[A-Z0-9_]+/); v = substr(line, 1, RLENGTH)
      if (index(v, p "_") != 1 && index(v, "HOST_" p "_") != 1 && v != "TARGET_FINALIZE_HOOKS")
        print NR ":" v
    }' "$mk")
  # Indentation (check-package lib_mk Indent): tabs inside define and after a backslash only.
  while IFS= read -r msg; do fail "$mk:$msg"; done < <(awk '
    /^[ \t]*define[ \t]/ { d = 1; bs = 0; next }
    /^[ \t]*endef/ { d = 0; bs = 0; next }
    {
      want = d || bs
      if (!bs && $0 ~ /^[ \t]*(ifdef|ifeq|ifndef|ifneq|else|endif)([ \t]|$)/) want = 0
      bs = ($0 ~ /^[^#].*\\$/)
      if ($0 ~ /^[ \t]*$/) next
      if (d && $0 ~ /^[ \t]*#/) next
      if (want && $0 !~ /^\t/) print NR ": expected indent with tabs"
      if (!want && $0 ~ /^\t/) print NR ": unexpected indent with tabs"
    }' "$mk")
  while IFS=: read -r lineno _; do
    fail "$mk:$lineno: use only one space before a backslash"
  done < <(grep -nE '(  |	 ?)\\$' "$mk" || true)
done

# ---- Config.in files: indentation, attribute order, help text -------------------------------
for cfg in Config.in package/*/Config.in; do
  while IFS= read -r msg; do fail "$cfg:$msg"; done < <(awk '
    function blank_or_comment(s) { return s ~ /^[ \t]*$/ || s ~ /^[ \t]*#/ }
    {
      if (blank_or_comment($0)) next
      split($0, w, /[ \t]+/); e = (w[1] == "") ? w[2] : w[1]
      # help text runs until the next entry (check-package HelpText)
      if (help && e !~ /^(config|menuconfig|menu|endmenu|if|endif|choice|endchoice|comment|source)$/) {
        ok = $0 ~ /^\t  / && length($0) <= 65 && (!first || $0 ~ /^\t  [^ \t]/); first = 0
        url = $0 ~ /^[ \t]*(http|https|git):\/\/[^ ]*$/
        if (!ok && !url) print NR ": help text: <tab><2 spaces><at most 62 characters>"
        next
      }
      help = 0
      if (e ~ /^(bool|default|depends|help|prompt|select|string|int|hex|tristate|range|imply|option)$/) {
        if ($0 !~ ("^\t" e "([ \t]|$)")) print NR ": " e ": indent with one tab"
        rank = (e ~ /^(bool|prompt|string|int|hex|tristate)$/) ? 1 : (e == "default") ? 2 : (e == "depends") ? 3 : (e == "select") ? 4 : (e == "help") ? 5 : 0
        if (rank && rank < state) print NR ": attributes order: type, default, depends on, select, help"
        if (rank) state = rank
        if (e == "help") { help = 1; first = 1 }
      } else if (e ~ /^(config|menuconfig|menu|endmenu|if|endif|choice|endchoice|comment|source)$/) {
        if ($0 !~ ("^" e)) print NR ": " e ": should not be indented"
        state = 0
      }
    }' "$cfg")
  grep -qE '^[[:space:]]default n$' "$cfg" &&
    fail "$cfg: 'default n' is redundant (booleans default to n)"
done

# ---- .hash files ------------------------------------------------------------------------------
for hash in package/*/*.hash; do
  while IFS= read -r msg; do fail "$hash:$msg"; done < <(awk '
    BEGIN { len["md5"] = 32; len["sha1"] = 40; len["sha224"] = 56; len["sha256"] = 64; len["sha384"] = 96; len["sha512"] = 128 }
    /^#/ || /^[ \t]*$/ { next }
    {
      if (NF != 3) { print NR ": expected three fields"; next }
      if (!($1 in len)) { print NR ": unexpected type of hash " $1; next }
      if ($2 !~ /^[0-9A-Fa-f]+$/ || length($2) != len[$1]) print NR ": hash size does not match type " $1
      if ($0 != $1 "  " $2 "  " $3) print NR ": fields are separated by two spaces"
    }' "$hash")
done

# ---- every text file: whitespace, end of file, ASCII; executable bits ------------------------
texts=(external.desc Config.in external.mk check.sh configs/* package/*/* board/*/*)
for f in "${texts[@]}"; do
  [ -f "$f" ] || continue
  if [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ]; then fail "$f: missing newline at end of file"; fi
  while IFS= read -r msg; do fail "$f:$msg"; done < <(awk '
    /[ \t]$/ { print NR ": trailing whitespace" }
    /[^\t -~]/ { print NR ": not ASCII" }
    { if ($0 == "" && last == "" && NR > 1) print NR ": two blank lines in a row"; last = $0 }
    END { if (NR > 0 && last ~ /^[ \t]*$/) print NR ": blank line at end of file" }' "$f")
done
for f in Config.in external.mk external.desc configs/* package/*/* board/*/*; do
  [ -f "$f" ] || continue
  case "$f" in
    *.sh) [ -x "$f" ] || fail "$f: not executable (Buildroot runs it directly)" ;;
    *) [ ! -x "$f" ] || fail "$f: should not be executable" ;;
  esac
done
[ -x check.sh ] || fail "check.sh: not executable"

# ---- board scripts ----------------------------------------------------------------------------
for script in board/*/*.sh; do
  [ "$(head -n 1 "$script")" = "#!/usr/bin/env bash" ] || fail "$script: first line must be #!/usr/bin/env bash"
  grep -qx 'set -euo pipefail' "$script" || fail "$script: no 'set -euo pipefail'"
  bash -n "$script" 2>/dev/null || fail "$script: bash -n: $(bash -n "$script" 2>&1 | head -n 1)"
  if command -v shellcheck >/dev/null; then
    (cd "$(dirname "$script")" && shellcheck -x "$(basename "$script")" >/dev/null 2>&1) ||
      fail "$script: shellcheck: $(cd "$(dirname "$script")" && shellcheck -x -f gcc "$(basename "$script")" 2>&1 | head -n 1)"
  fi
done

# ---- defconfigs -------------------------------------------------------------------------------
defconfigs=(configs/*_defconfig)
((${#defconfigs[@]})) || fail "configs/: no <name>_defconfig"
for def in "${defconfigs[@]}"; do
  while IFS= read -r msg; do fail "$def:$msg"; done < <(awk '
    /^$/ { next }
    /^# BR2_[A-Za-z0-9_]+ is not set$/ { sym = $2 }
    /^#/ && !/^# BR2_[A-Za-z0-9_]+ is not set$/ { next }
    /^BR2_[A-Za-z0-9_]+=/ { sym = substr($0, 1, index($0, "=") - 1) }
    !/^BR2_[A-Za-z0-9_]+=/ && !/^# BR2_[A-Za-z0-9_]+ is not set$/ { print NR ": not a Kconfig line"; next }
    { if (sym in seen) print NR ": " sym " is set twice (first on line " seen[sym] ")"; else seen[sym] = NR }' "$def")
  # Paths into this tree must exist; no other br2-external tree is part of this build.
  while IFS= read -r ref; do
    case "$ref" in
      "\$($VAR)/"*)
        rel=${ref#"\$($VAR)/"}
        [ -e "$rel" ] || fail "$def: $ref: no $rel in the tree" ;;
      *) fail "$def: $ref: names another br2-external tree than $VAR" ;;
    esac
  done < <(grep -oE '\$\(BR2_EXTERNAL_[A-Za-z0-9_]+_PATH\)[^" ]*' "$def" | sort -u || true)
  # check-package (lib_defconfig): a defconfig forces hash checking.
  grep -qx 'BR2_DOWNLOAD_FORCE_CHECK_HASHES=y' "$def" || fail "$def: missing BR2_DOWNLOAD_FORCE_CHECK_HASHES=y"
  # The appliance: the gatekeeper is the only program.
  for want in 'BR2_INIT_NONE=y' '# BR2_PACKAGE_BUSYBOX is not set' 'BR2_SYSTEM_BIN_SH_NONE=y' \
    'BR2_TARGET_ROOTFS_CPIO=y' 'BR2_PACKAGE_GATEKEEPER=y' 'BR2_LINUX_KERNEL=y'; do
    grep -qxF "$want" "$def" || fail "$def: missing '$want'"
  done
  for sym in BR2_ROOTFS_OVERLAY BR2_ROOTFS_POST_BUILD_SCRIPT BR2_ROOTFS_POST_IMAGE_SCRIPT BR2_LINUX_KERNEL_CUSTOM_CONFIG_FILE; do
    grep -qE "^$sym=\"\\\$\\($VAR\\)/" "$def" || fail "$def: $sym must name a file of this tree through \$($VAR)"
  done
  # The release this tree is kept against, and the kernel linux.config was written for: without
  # a pin Buildroot builds its latest kernel (7.1.9 in 2026.08) with a 6.1 configuration.
  grep -qE '^# Buildroot release: [0-9]{4}\.(02|05|08|11)(\.[0-9]+)?( |$)' "$def" ||
    fail "$def: name the Buildroot release the tree is kept against in a '# Buildroot release: YYYY.MM' line"
  grep -qx 'BR2_LINUX_KERNEL_CUSTOM_VERSION=y' "$def" ||
    fail "$def: pin the kernel: BR2_LINUX_KERNEL_CUSTOM_VERSION=y and BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE (Buildroot's default is its latest kernel)"
  pinned=$(sed -n 's/^BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE="\(.*\)"$/\1/p' "$def")
  # Debian's version is the upstream release, then "-<revision>" (6.1.192-2 is 6.1.192).
  debian=$(awk '$1 ~ /^linux-image-/ { print $2; exit }' "$PACKAGES_LOCK" 2>/dev/null || true)
  upstream=${debian%%-*}
  upstream=${upstream%%+*}
  if [ -z "$upstream" ]; then
    fail "$PACKAGES_LOCK: no linux-image-* pin to compare the defconfig's kernel with"
  elif [ "$pinned" != "$upstream" ]; then
    fail "$def: BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE is '${pinned:-unset}', the Debian kernel pinned in image/packages.lock is $debian: set it to \"$upstream\" (and its hash in board/vault/patches/linux/linux.hash)"
  else
    series=${upstream%.*}
    grep -qx "BR2_PACKAGE_HOST_LINUX_HEADERS_CUSTOM_${series//./_}=y" "$def" ||
      fail "$def: the kernel is $upstream: set BR2_PACKAGE_HOST_LINUX_HEADERS_CUSTOM_${series//./_}=y"
    hashes=board/vault/patches/linux/linux.hash
    if ! grep -qE "^sha256 +[0-9a-f]{64} +linux-$upstream\.tar\.xz$" "$hashes" 2>/dev/null; then
      echo "check.sh: note: $hashes has no sha256 for linux-$upstream.tar.xz yet; Buildroot stops at the download until it is added from kernel.org's signed sha256sums.asc (board/vault/readme.txt)" >&2
    fi
  fi
  grep -qx 'BR2_KERNEL_HEADERS_AS_KERNEL=y' "$def" || fail "$def: missing BR2_KERNEL_HEADERS_AS_KERNEL=y (the toolchain's headers must be those of the kernel it runs on)"
  # The kernel configuration: Kconfig lines only, each symbol once, the appliance's options on,
  # modules off (image/build.sh KERNEL=minimal also checks every line took in a real build).
  grep -qx 'BR2_LINUX_KERNEL_USE_CUSTOM_CONFIG=y' "$def" || fail "$def: missing BR2_LINUX_KERNEL_USE_CUSTOM_CONFIG=y"
  read -ra kconfigs < <(sed -n 's/^BR2_LINUX_KERNEL_CUSTOM_CONFIG_FILE="\(.*\)"$/\1/p' "$def") || true
  for kconfig in "${kconfigs[@]}"; do
    kconfig=${kconfig#"\$($VAR)/"}
    [ -f "$kconfig" ] || continue
    while IFS= read -r msg; do fail "$kconfig:$msg"; done < <(awk '
      /^$/ { next }
      /^# CONFIG_[A-Za-z0-9_]+ is not set$/ { sym = $2 }
      /^#/ && !/^# CONFIG_[A-Za-z0-9_]+ is not set$/ { next }
      /^CONFIG_[A-Za-z0-9_]+=(y|m|-?[0-9]+|0x[0-9a-fA-F]+|".*")$/ { sym = substr($0, 1, index($0, "=") - 1) }
      !/^CONFIG_[A-Za-z0-9_]+=(y|m|-?[0-9]+|0x[0-9a-fA-F]+|".*")$/ && !/^# CONFIG_[A-Za-z0-9_]+ is not set$/ { print NR ": not a kernel config line"; next }
      { if (sym in seen) print NR ": " sym " is set twice"; else seen[sym] = NR }' "$kconfig")
    for opt in EFI EFI_STUB BLK_DEV_INITRD RD_LZ4 DEVTMPFS TMPFS SERIAL_8250_CONSOLE EFI_PARTITION \
      VIRTIO_PCI VIRTIO_BLK VIRTIO_NET SATA_AHCI BLK_DEV_NVME BLK_DEV_SD EXT4_FS VFAT_FS \
      NLS_CODEPAGE_437 NLS_UTF8 USB_XHCI_HCD USB_EHCI_HCD USB_STORAGE USB_UAS E1000 E1000E IGB \
      NET INET PACKET RTC_HCTOSYS; do
      grep -qx "CONFIG_$opt=y" "$kconfig" || fail "$kconfig: CONFIG_$opt=y missing"
    done
    grep -qx "# CONFIG_MODULES is not set" "$kconfig" || fail "$kconfig: loadable modules must be off (# CONFIG_MODULES is not set)"
  done
done

# ---- the rootfs overlay -------------------------------------------------------------------
for overlay in board/*/rootfs_overlay; do
  [ -f "$overlay/etc/os-release" ] || fail "$overlay: no etc/os-release"
  while IFS= read -r f; do
    fail "$overlay: $f is executable; the gatekeeper (/init) is the image's only program"
  done < <(find "$overlay" -type f -perm /111)
  while IFS= read -r f; do
    fail "$overlay: $f: the trust root and keys come from the build configuration, never from the tree"
  done < <(find "$overlay" -type f \( -name 'root.toml' -o -name '*.key' \))
done

# ---- both builders make the UKI and the disk with the same functions -------------------------
# shellcheck disable=SC2016 # the patterns match a literal `. "$VAR/...uki-disk.bash"` line
for script in board/vault/post-image.sh "$BUILD_SH"; do
  if [ ! -f "$script" ]; then
    fail "$script: missing"
  elif ! grep -Eq '^\. "\$[A-Z_]+/(buildroot-overlay/)?board/vault/uki-disk\.bash"$|^\. "\$BOARD_DIR/uki-disk\.bash"$' "$script"; then
    fail "$script: must source board/vault/uki-disk.bash (one definition of the UKI and the disk)"
  elif grep -Eq '^[[:space:]]*(objcopy|mkfs\.fat|sfdisk|mkfs\.ext4) ' "$script"; then
    fail "$script: makes the UKI or the disk itself; use vault_uki / vault_disk from uki-disk.bash"
  fi
done

if ((problems)); then
  echo "check.sh: $problems problem(s) in $TREE" >&2
  exit 1
fi
echo "check.sh: br2-external tree $NAME ($TREE): all checks passed"
