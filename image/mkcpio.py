#!/usr/bin/env python3
"""Writes a reproducible initramfs: a newc cpio of a directory tree, lz4-compressed.

Entries are sorted by path; every mtime is SOURCE_DATE_EPOCH; owner and group are 0; inode
numbers are assigned in order; nothing of the build machine (users, times, paths) goes in.
Extra device nodes (the kernel needs /dev/console before devtmpfs is mounted) are given as
NAME:c:MAJOR:MINOR arguments, so the build needs no root and no mknod.

lz4 rather than gzip because the kernel unpacks it at every boot: measured under emulation, the
same 14 MB unpack to /init 0.3 s sooner in wall time (0.6 s fewer instructions) for 20 % more
bytes. The kernel reads lz4's legacy format only (`lz4 -l`); at one level and one lz4 version the
output is the same bytes every time.

usage: mkcpio.py TREE OUT.cpio.lz4 [dev/console:c:5:1 ...]
"""
import os
import stat
import subprocess
import sys


def header(ino, mode, nlink, size, mtime, rdevmajor, rdevminor, name):
    fields = [ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdevmajor, rdevminor, len(name) + 1, 0]
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def pad(n):
    return b"\0" * ((4 - n % 4) % 4)


def entry(ino, path, mode, nlink, data, mtime, rdev=(0, 0)):
    name = path.encode()
    head = header(ino, mode, nlink, len(data), mtime, rdev[0], rdev[1], name) + name + b"\0"
    return head + pad(len(head)) + data + pad(len(data))


def main():
    tree, out, devices = sys.argv[1], sys.argv[2], sys.argv[3:]
    mtime = int(os.environ["SOURCE_DATE_EPOCH"])
    items = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            items[os.path.relpath(full, tree)] = full
    for spec in devices:
        name, kind, major, minor = spec.split(":")
        assert kind == "c", spec
        items[name] = (int(major), int(minor))
    blob = bytearray()
    for ino, path in enumerate(sorted(items), start=1):
        source = items[path]
        if isinstance(source, tuple):
            blob += entry(ino, path, stat.S_IFCHR | 0o600, 1, b"", mtime, source)
            continue
        st = os.lstat(source)
        perm = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            blob += entry(ino, path, stat.S_IFDIR | perm, 2, b"", mtime)
        elif stat.S_ISLNK(st.st_mode):
            blob += entry(ino, path, stat.S_IFLNK | 0o777, 1, os.readlink(source).encode(), mtime)
        elif stat.S_ISREG(st.st_mode):
            with open(source, "rb") as f:
                blob += entry(ino, path, stat.S_IFREG | perm, 1, f.read(), mtime)
        else:
            sys.exit(f"mkcpio: {source}: not a file, directory or symlink")
    blob += entry(0, "TRAILER!!!", 0, 1, b"", 0)
    # From stdin: the legacy format's header carries no name, size or time of this build.
    with open(out, "wb") as f:
        subprocess.run(["lz4", "-l", "-12", "-q", "-c"], input=bytes(blob), stdout=f, check=True)


if __name__ == "__main__":
    main()
