#!/usr/bin/env python3
"""The module plan the gatekeeper follows at boot (gatekeeper/src/modules.rs), for the Debian
kernel: every module in the closure of image/modules.txt over modules.dep with its direct
dependencies, what to load when, and the kernel's device aliases of the modules loaded only for
present hardware.

usage: module-plan.py LIB_MODULES_DIR MODULES_TXT KERNEL_RELEASE > modules.list
"""
import sys
base, wanted_file, kver = sys.argv[1], sys.argv[2], sys.argv[3]
def name_of(path):
    return path.rsplit("/", 1)[1].removesuffix(".ko").replace("-", "_")
deps = {}
for line in open(f"{base}/modules.dep"):
    path, _, rest = line.partition(":")
    deps[name_of(path)] = (path, [name_of(d) for d in rest.split()])
aliases = {}
for line in open(f"{base}/modules.alias"):
    if line.startswith("alias "):
        _, pattern, owner = line.split()
        # Device aliases only (bus:...), not crypto-, fs-, block-major- or devname: names.
        if ":" in pattern and not pattern.startswith("devname:"):
            # The gatekeeper's fnmatch has no escapes and no [:classes:]; no kernel alias uses them.
            if "\\" in pattern or "[:" in pattern:
                sys.exit(f"image: alias {pattern} of {owner} uses an escape or a character class")
            aliases.setdefault(owner, []).append(pattern)
level, loads = {}, []
def visit(name):
    if name not in level:
        level[name] = 1 + max((visit(d) for d in deps[name][1]), default=-1)
    return level[name]
for number, raw in enumerate(open(wanted_file), 1):
    words = raw.split("#")[0].split()
    if not words:
        continue
    if len(words) != 3 or words[0] not in ("disk", "boot", "usb") or words[1] not in ("present", "always"):
        sys.exit(f"image: modules.txt line {number}: expected `disk|boot|usb present|always NAME`: {raw.strip()}")
    phase, when, name = words[0], words[1], words[2].replace("-", "_")
    if name not in deps:
        sys.exit(f"image: module {name} is not in kernel {kver}")
    if when == "present" and not aliases.get(name):
        sys.exit(f"image: module {name} has no device aliases, so `present` would never load it")
    visit(name)
    loads.append((phase, when, name))
print(f"# Module plan for kernel {kver}, written by image/build.sh from image/modules.txt.")
for name in sorted(level, key=lambda n: (level[n], n)):
    print("module", name, f"/lib/modules/{kver}/{deps[name][0]}", *deps[name][1])
for phase, when, name in loads:
    print("load", phase, when, name)
for name in sorted({n for _, w, n in loads if w == "present"}):
    for pattern in aliases[name]:
        print("alias", pattern, name)
