#!/usr/bin/env python3
"""Reads an air-gap vault store (store format 1) without the vault's code.

Written from docs/STORE-FORMAT.md alone, with the Python 3 standard library; section numbers
below are that document's. Nothing in the store is written to.

    read-store.py list STORE
    read-store.py restore STORE SNAPSHOT DEST [--vault-key ed25519:... | --vault-key FILE] [--salvage]

--salvage (section 12) also takes chunks from damaged packs and from packs without an index,
each still re-hashed, and restores every file it can, listing the others.

`restore` checks the receipt (its Ed25519 signature under --vault-key, if the `cryptography`
module is installed; otherwise it says the check was skipped), that the receipt is this
snapshot's, the manifest's SHA-256 against the receipt, every pack index's checksum, and every
chunk's SHA-256 as it is read. DEST must be new or empty. Exit status: 0 restored, 1 refused
or failed (the reason on stderr), 2 usage.
"""

import argparse
import base64
import binascii
import hashlib
import json
import mmap
import os
import re
import stat
import sys
import tempfile

MAX_CHUNK = 1024 * 1024
MIN_CHUNK = 32 * 1024
MAX_INDEX_BYTES = 512 * 1024 * 1024
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_RECEIPT_FILE_BYTES = 32 * 1024
MAX_RECEIPT_BODY_BYTES = 16 * 1024
MAX_PATH = 4096
MAX_COMPONENT = 255
RECEIPT_CONTEXT = b"airgap-vault/receipt/v1"
RECEIPT_FIELDS = [  # section 7, in order: name, JSON type
    ("vault_id", str), ("vault_key", str), ("policy_version", int), ("snapshot_id", str), ("dataset", str), ("pusher", str),
    ("manifest_sha256", str), ("files", int), ("logical_bytes", int), ("chunks_total", int), ("chunks_new", int), ("bytes_new", int),
    ("received_at", str), ("retain_until", str), ("client_time", int),
]
KIND_FILE, KIND_DIR, KIND_SYMLINK, KIND_STREAM = 1, 2, 3, 4
IDENTIFIER = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}\Z")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\Z")


class Refused(Exception):
    """Something in the store fails a check: nothing it claims is used."""


class Incomplete(Exception):
    """A salvage restored what it could; the rest is listed."""


def sha256(data):
    return hashlib.sha256(data).digest()


def read_bounded(path, limit, what):
    """A regular file (never through a symlink) of at most `limit` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise Refused(f"{what} {path}: cannot be read ({e.strerror})")
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise Refused(f"{what} {path}: not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise Refused(f"{what} {path}: larger than its {limit}-byte limit")
    return data


# ---- the vault key and the receipt (section 7) ---------------------------------------------

def parse_key(text, what):
    """`ed25519:<base64 of 32 bytes>` -> the 32 bytes."""
    text = text.strip()
    if not text.startswith("ed25519:"):
        raise Refused(f"{what}: a vault key is `ed25519:` followed by base64")
    try:
        raw = base64.b64decode(text[len("ed25519:"):], validate=True)
    except binascii.Error:
        raise Refused(f"{what}: not valid base64")
    if len(raw) != 32:
        raise Refused(f"{what}: {len(raw)} bytes, an Ed25519 public key is 32")
    return raw


def key_text(raw):
    return "ed25519:" + base64.b64encode(raw).decode()


def key_id(raw):
    return sha256(raw).hex()


def strict_object(pairs):
    seen = {}
    for name, value in pairs:
        if name in seen:
            raise Refused(f"member `{name}` appears twice")
        seen[name] = value
    return seen


def load_receipt(path):
    """(body bytes, signature bytes, decoded body) of a receipt.json, checked for form only."""
    raw = read_bounded(path, MAX_RECEIPT_FILE_BYTES, "receipt")
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=strict_object)
    except (UnicodeDecodeError, ValueError) as e:
        raise Refused(f"receipt {path}: not a JSON document ({e})")
    if not isinstance(doc, dict) or sorted(doc) != ["receipt", "signature"]:
        raise Refused(f"receipt {path}: must hold exactly `receipt` and `signature`")
    if not isinstance(doc["receipt"], str) or not isinstance(doc["signature"], str):
        raise Refused(f"receipt {path}: `receipt` and `signature` must be strings")
    body = doc["receipt"].encode("utf-8")
    if len(body) > MAX_RECEIPT_BODY_BYTES:
        raise Refused(f"receipt {path}: body larger than {MAX_RECEIPT_BODY_BYTES} bytes")
    try:
        signature = base64.b64decode(doc["signature"], validate=True)
    except binascii.Error:
        signature = b""
    if len(signature) != 64:
        raise Refused(f"receipt {path}: `signature` is not base64 of a 64-byte Ed25519 signature")
    try:
        fields = json.loads(body.decode("utf-8"), object_pairs_hook=strict_object)
    except (UnicodeDecodeError, ValueError) as e:
        raise Refused(f"receipt {path}: body is not JSON ({e})")
    if not isinstance(fields, dict) or list(fields) != [name for name, _ in RECEIPT_FIELDS]:
        raise Refused(f"receipt {path}: body must hold exactly {', '.join(n for n, _ in RECEIPT_FIELDS)}, in that order")
    for name, kind in RECEIPT_FIELDS:
        value = fields[name]
        if type(value) is not kind:  # bool is an int to isinstance
            raise Refused(f"receipt {path}: `{name}` must be a JSON {'integer' if kind is int else 'string'}")
    for name in ("received_at", "retain_until"):
        if not TIMESTAMP.match(fields[name]):
            raise Refused(f"receipt {path}: `{name}` is not YYYY-MM-DDTHH:MM:SSZ")
    # The body must be the compact encoding of what it says (section 7).
    if json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8") != body:
        raise Refused(f"receipt {path}: body is not in its compact canonical form")
    return body, signature, fields


def ed25519_verifier():
    """A function (key bytes, signature, message) -> bool, or None without `cryptography`."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        return None

    def verify(key, signature, message):
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
            return True
        except InvalidSignature:
            return False

    return verify


def check_receipt(store, snapshot, pinned):
    """Section 10 steps 1 and 2. Returns the decoded body; prints what was and was not checked."""
    body, signature, fields = load_receipt(os.path.join(store, "snapshots", snapshot, "receipt.json"))
    named = parse_key(fields["vault_key"], "the receipt's vault_key")
    message = sha256(RECEIPT_CONTEXT + b"\x00" + body)
    verify = ed25519_verifier()
    if pinned is not None and named != pinned:
        raise Refused(f"snapshot {snapshot}: its receipt is signed by vault key id {key_id(named)}, not the pinned vault key id {key_id(pinned)}: "
                      "this store was not sealed by the vault you pinned, or was re-signed; do not trust it")
    if verify is None:
        print("signature: SKIPPED (the Python `cryptography` module is not installed, so Ed25519 cannot be checked); "
              + ("the receipt names the pinned vault key" if pinned else "no --vault-key given") + f" (key id {key_id(named)})")
    elif pinned is not None:
        if not verify(pinned, signature, message):
            raise Refused(f"snapshot {snapshot}: its receipt names the pinned vault key (key id {key_id(pinned)}) but its signature does not verify "
                          "under it: the receipt was altered; do not trust it")
        print(f"signature: verified under the pinned vault key (key id {key_id(pinned)})")
    else:
        if not verify(named, signature, message):
            raise Refused(f"snapshot {snapshot}: its receipt's signature does not verify under the vault key it names: the receipt was altered")
        print(f"signature: SKIPPED against a pinned key (no --vault-key given); it verifies under the key the receipt names (key id {key_id(named)}), "
              "which shows it is intact, not whose vault sealed it")
    if fields["snapshot_id"] != snapshot:
        raise Refused(f"snapshot {snapshot}: its receipt is for snapshot {fields['snapshot_id']}: snapshot directories were moved or swapped")
    return fields


# ---- the manifest (section 6) --------------------------------------------------------------

class Cursor:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n, field):
        if n > len(self.data) - self.pos:
            raise Refused(f"manifest truncated in {field} (at byte {self.pos})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def uint(self, n, field):
        return int.from_bytes(self.take(n, field), "big")

    def remaining(self):
        return len(self.data) - self.pos


def check_path(path):
    """Rule 1: a relative path that cannot leave the target."""
    shown = path.decode("utf-8", "backslashreplace")
    if not path or len(path) > MAX_PATH:
        raise Refused(f"refused: manifest path `{shown}` is empty or longer than {MAX_PATH} bytes")
    if b"\x00" in path:
        raise Refused(f"refused: manifest path `{shown}` holds a NUL byte")
    if path.startswith(b"/"):
        raise Refused(f"refused: manifest path `{shown}` is absolute")
    for part in path.split(b"/"):
        if part in (b"", b".", b".."):
            raise Refused(f"refused: manifest path `{shown}` has an empty, `.` or `..` component")
        if len(part) > MAX_COMPONENT:
            raise Refused(f"refused: manifest path `{shown}` has a component longer than {MAX_COMPONENT} bytes")


def decode_manifest(data):
    """Every entry as a dict, every rule of section 6 enforced."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise Refused("manifest larger than 16 MiB")
    r = Cursor(data)
    if r.take(4, "magic") != b"VMAN":
        raise Refused("manifest: bad magic (not VMAN)")
    version = r.uint(1, "version")
    if version != 1:
        raise Refused(f"manifest version {version}: this reader knows version 1 only")
    count = r.uint(4, "entry count")
    if count > r.remaining() // 15:
        raise Refused(f"manifest: {count} entries cannot fit in {r.remaining()} bytes")
    entries, not_dirs, previous = [], set(), None
    for _ in range(count):
        kind = r.uint(1, "entry kind")
        path = r.take(r.uint(2, "path length"), "path")
        mode = r.uint(4, "mode")
        mtime = int.from_bytes(r.take(8, "mtime"), "big", signed=True)
        entry = {"kind": kind, "path": path, "mode": mode, "mtime": mtime}
        if kind in (KIND_FILE, KIND_STREAM):
            entry["size"] = r.uint(8, "size")
            n = r.uint(4, "chunk count")
            if n * 36 > r.remaining():
                raise Refused(f"manifest: {n} chunk refs cannot fit in {r.remaining()} bytes")
            entry["chunks"] = [(r.take(32, "chunk id"), r.uint(4, "chunk length")) for _ in range(n)]
        elif kind == KIND_SYMLINK:
            entry["target"] = r.take(r.uint(2, "target length"), "symlink target")
        elif kind != KIND_DIR:
            raise Refused(f"manifest: unknown entry kind {kind}")
        check_path(path)
        shown = path.decode("utf-8", "backslashreplace")
        if previous is not None and previous >= path:
            raise Refused(f"manifest: `{shown}` is listed twice or out of order (entries must be sorted by path)")
        parts = path.split(b"/")
        for depth in range(1, len(parts)):
            if b"/".join(parts[:depth]) in not_dirs:
                raise Refused(f"refused: manifest entry `{shown}` lies under a file or symlink")
        if mode & ~0o7777:
            raise Refused(f"manifest: `{shown}` has mode bits beyond 0o7777")
        if kind == KIND_STREAM and count != 1:
            raise Refused("manifest: a stream must be the only entry")
        if "chunks" in entry:
            lens = [length for _, length in entry["chunks"]]
            if any(length == 0 or length > MAX_CHUNK for length in lens):
                raise Refused(f"manifest: `{shown}` has a chunk length out of range")
            if any(length < MIN_CHUNK for length in lens[:-1]):
                raise Refused(f"manifest: `{shown}` has a chunk shorter than {MIN_CHUNK} bytes before its last")
            if sum(lens) != entry["size"]:
                raise Refused(f"manifest: `{shown}`: chunk lengths do not add up to the file size")
        if kind == KIND_SYMLINK:
            target = entry["target"]
            if not target or len(target) > MAX_PATH or b"\x00" in target:
                raise Refused(f"manifest: `{shown}`: symlink target empty, too long or with NUL")
        if kind != KIND_DIR:
            not_dirs.add(path)
        previous = path
        entries.append(entry)
    if r.remaining():
        raise Refused(f"manifest: {r.remaining()} trailing bytes")
    return entries


# ---- packs and their indexes (sections 4, 5, 12) -------------------------------------------

def index_entries(data):
    """(id, offset, length) of every entry, without checks."""
    body = data[9:]
    return [(body[i:i + 32], int.from_bytes(body[i + 32:i + 40], "big"), int.from_bytes(body[i + 40:i + 44], "big"))
            for i in range(0, len(body) - 43, 44)]


def check_index(data, pack_size):
    """Section 5's checks 1-5 (the caller did the file checks). The reason, or None."""
    if len(data) < 41:
        return f"index is {len(data)} bytes, shorter than an empty one (41)"
    if sha256(data[:-32]) != data[-32:]:
        return "index checksum does not match its contents (truncated or altered)"
    if data[:4] != b"VIDX" or data[4] != 1:
        return "not a version 1 pack index"
    count = int.from_bytes(data[5:9], "big")
    if len(data) != 41 + 44 * count:
        return f"index says {count} entries but is {len(data)} bytes"
    for chunk_id, offset, length in index_entries(data[:-32]):
        if offset + length > pack_size:
            return f"chunk {chunk_id.hex()} at {offset}+{length} lies past the pack's {pack_size} bytes (pack truncated)"
    return None


class Packs:
    """Where each chunk lies: every live pack's index, and with `salvage` what damaged packs still give."""

    def __init__(self, store, salvage):
        self.dir = os.path.join(store, "packs")
        self.where = {}  # chunk id -> [(pack path, offset, length)], live packs first
        self.notes = []
        self.files = {}
        self.salvage = salvage
        self.unindexed = []  # packs without an index (salvage walks them for wanted chunks)
        try:
            names = sorted(os.listdir(self.dir))
        except OSError as e:
            raise Refused(f"{self.dir}: cannot be listed ({e.strerror})")
        stems = {}
        for name in names:
            for suffix in (".pack", ".idx"):
                if name.endswith(suffix):
                    stems.setdefault(name[:-len(suffix)], set()).add(suffix)
        self.live = 0
        salvaged = []
        for stem in sorted(stems):
            pack, index = os.path.join(self.dir, stem + ".pack"), os.path.join(self.dir, stem + ".idx")
            if ".idx" not in stems[stem]:
                self.notes.append(f"pack {pack}: no index (an unfinished seal, or a sealed pack whose index was lost)")
                self.unindexed.append(pack)
                continue
            reason, data, pack_size = self.load(pack, index)
            if reason is None:
                self.live += 1
                for entry in index_entries(data[:-32]):
                    self.where.setdefault(entry[0], []).append((pack, entry[1], entry[2]))
                continue
            self.notes.append(f"pack {pack} set aside: {reason}")
            if salvage and data is not None and pack_size is not None:
                # Section 12: entries of a damaged index may still be right; each chunk is re-hashed anyway.
                salvaged += [(e[0], (pack, e[1], e[2])) for e in index_entries(data) if e[1] + e[2] <= pack_size]
        for chunk_id, location in salvaged:
            self.where.setdefault(chunk_id, []).append(location)

    @staticmethod
    def load(pack, index):
        """(reason or None, index bytes or None, pack size or None)."""
        try:
            st = os.lstat(pack)
            pack_size = st.st_size if stat.S_ISREG(st.st_mode) else None
        except FileNotFoundError:
            pack_size = None
        try:
            data = read_bounded(index, MAX_INDEX_BYTES, "index")
        except Refused as e:
            return str(e), None, pack_size
        if pack_size is None:
            return "pack file is missing or not a regular file (its index names chunks in it)", data, None
        return check_index(data, pack_size), data, pack_size

    def read_at(self, pack, offset, length):
        f = self.files.get(pack)
        if f is None:
            if len(self.files) >= 64:
                self.files.pop(next(iter(self.files))).close()
            f = self.files[pack] = os.fdopen(os.open(pack, os.O_RDONLY | os.O_NOFOLLOW), "rb")
        f.seek(offset)
        return f.read(length)

    def walk_unindexed(self, wanted):
        """Section 12's salvage of a pack without an index: find wanted chunks (id -> length) by re-hashing."""
        lengths = sorted(set(wanted.values()))
        for pack in self.unindexed:
            try:
                with open(pack, "rb") as f:
                    # Mapped, not read: a pack can be far larger than memory.
                    data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else b""
            except (OSError, ValueError):
                continue
            offset, found = 0, 0
            while offset < len(data):
                for length in lengths:
                    chunk_id = sha256(data[offset:offset + length]) if offset + length <= len(data) else None
                    if chunk_id is not None and wanted.get(chunk_id) == length:
                        self.where.setdefault(chunk_id, []).append((pack, offset, length))
                        offset, found = offset + length, found + 1
                        break
                else:
                    offset += 1
            self.notes.append(f"pack {pack}: salvage found {found} wanted chunk(s) in it")

    def chunk(self, chunk_id, length):
        """The chunk's bytes from the first copy that re-hashes (section 10 step 5)."""
        why = []
        for pack, offset, stored in self.where.get(chunk_id, []):
            if stored != length:
                why.append(f"{pack} has it as {stored} bytes, the manifest says {length}")
                continue
            try:
                data = self.read_at(pack, offset, length)
            except OSError as e:
                why.append(f"{pack}: {e.strerror}")
                continue
            if len(data) == length and sha256(data) == chunk_id:
                return data
            why.append(f"{pack} at {offset}: does not hash to its id (damaged)")
        raise Refused(f"chunk {chunk_id.hex()} cannot be read: " + ("; ".join(why) if why else "no live pack holds it"))


# ---- list and restore ----------------------------------------------------------------------

def snapshots_dir(store):
    path = os.path.join(store, "snapshots")
    if not os.path.isdir(path) or not os.path.isdir(os.path.join(store, "packs")):
        raise Refused(f"{store}: not a vault store (no snapshots/ and packs/)")
    return path


def cmd_list(args):
    path = snapshots_dir(args.store)
    for name in sorted(os.listdir(path), key=os.fsencode):
        if IDENTIFIER.match(name) and os.path.isdir(os.path.join(path, name)) and not os.path.islink(os.path.join(path, name)):
            print(name)
        else:
            print(f"read-store.py: {os.path.join(path, name)}: not a snapshot (ignored)", file=sys.stderr)


def cmd_restore(args):
    snaps = snapshots_dir(args.store)
    if not IDENTIFIER.match(args.snapshot) or not os.path.isdir(os.path.join(snaps, args.snapshot)):
        raise Refused(f"no snapshot `{args.snapshot}` in {args.store}")
    dest = args.dest
    if os.path.lexists(dest) and (not os.path.isdir(dest) or os.path.islink(dest) or os.listdir(dest)):
        raise Refused(f"{dest}: must be a new or empty directory")
    pinned = None
    if args.vault_key is not None:
        text = args.vault_key
        if not text.strip().startswith("ed25519:") and os.path.isfile(text):
            with open(text, encoding="utf-8") as f:
                text = f.read()
        pinned = parse_key(text, "--vault-key")
    receipt = check_receipt(args.store, args.snapshot, pinned)

    manifest = read_bounded(os.path.join(snaps, args.snapshot, "manifest"), MAX_MANIFEST_BYTES, "manifest")
    actual = sha256(manifest).hex()
    if actual != receipt["manifest_sha256"]:
        raise Refused(f"snapshot {args.snapshot}: manifest hashes to {actual}, its receipt says {receipt['manifest_sha256']}")
    print(f"manifest: SHA-256 {actual} matches the receipt")
    entries = decode_manifest(manifest)

    packs = Packs(args.store, args.salvage)
    wanted = {cid: length for e in entries for cid, length in e.get("chunks", [])}
    if args.salvage and packs.unindexed:
        packs.walk_unindexed({cid: length for cid, length in wanted.items() if cid not in packs.where})
    for note in packs.notes:
        print(f"read-store.py: {note}", file=sys.stderr)
    missing = {cid for cid in wanted if cid not in packs.where}
    if missing and not args.salvage:
        lost = [e["path"].decode("utf-8", "backslashreplace") for e in entries if any(cid in missing for cid, _ in e.get("chunks", []))]
        raise Refused(f"snapshot {args.snapshot} cannot be restored whole: {len(missing)} chunk(s) in no live pack (first: {min(missing).hex()}), "
                      f"needed by {len(lost)} file(s) ({', '.join(lost[:5])}); nothing was written; --salvage restores what can be")

    if not os.path.lexists(dest):
        os.makedirs(dest)
    top = {e["path"].split(b"/")[0] for e in entries}
    temp = tempfile.mkdtemp(prefix=".read-store-", dir=dest)
    while os.fsencode(os.path.basename(temp)) in top:  # never the name of something restored
        os.rmdir(temp)
        temp = tempfile.mkdtemp(prefix=".read-store-", dir=dest)
    base = os.fsencode(dest)
    counts = {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0, "chunks": 0}
    dirs, links, not_restored = [], [], []
    try:
        for number, e in enumerate(entries):
            path = os.path.join(base, e["path"])
            make_dirs(base, e["path"] if e["kind"] == KIND_DIR else os.path.dirname(e["path"]))
            if e["kind"] == KIND_DIR:
                dirs.append((path, e))
                counts["dirs"] += 1
            elif e["kind"] == KIND_SYMLINK:
                links.append((path, e["target"], e["mtime"]))
            elif not args.salvage:
                write_file(packs, e, path, os.path.join(os.fsencode(temp), b"%d.partial" % number), counts)
            else:
                # Salvage goes on past a file it cannot restore whole, and lists it.
                try:
                    if any(cid in missing for cid, _ in e["chunks"]):
                        raise Refused("a chunk of it is in no pack")
                    write_file(packs, e, path, os.path.join(os.fsencode(temp), b"%d.partial" % number), counts)
                except Refused as why:
                    not_restored.append((e["path"].decode("utf-8", "backslashreplace"), str(why)))
        for path, target, mtime in links:
            os.symlink(target, path)
            try:
                os.utime(path, ns=(os.lstat(path).st_atime_ns, mtime * 10**9), follow_symlinks=False)
            except (NotImplementedError, OSError):
                pass  # not every system can time a symlink; vaultctl does not either
            counts["symlinks"] += 1
    finally:
        for name in os.listdir(temp):
            os.unlink(os.path.join(temp, name))
        os.rmdir(temp)
    # Deepest first: a read-only directory cannot block its children, and no later write changes its time.
    for path, e in reversed(dirs):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchmod(fd, e["mode"] & 0o777)
            os.utime(fd, ns=(os.fstat(fd).st_atime_ns, e["mtime"] * 10**9))
        finally:
            os.close(fd)
    print(f"packs: {packs.live} live" + (f", {len(packs.notes)} note(s) on stderr" if packs.notes else ""))
    print(f"restored {args.snapshot} to {dest}: {counts['files']} files, {counts['dirs']} dirs, {counts['symlinks']} symlinks, "
          f"{counts['bytes']} bytes; {counts['chunks']} chunks re-hashed and verified")
    if not_restored:
        print(f"NOT RESTORED: {len(not_restored)} file(s), none of them even in part:")
        for path, why in not_restored:
            print(f"  {path}: {why}")
        raise Incomplete(f"snapshot {args.snapshot} restored incompletely: {len(not_restored)} file(s) could not be (listed on stdout)")


def make_dirs(base, relative):
    """Each directory of `relative` under `base`, never through a symlink or a file."""
    path = base
    for part in relative.split(b"/") if relative else []:
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise Refused(f"refused: {os.fsdecode(path)} is a file or symlink where the snapshot has a directory")


def write_file(packs, e, path, temp, counts):
    """A file or stream, whole or not at all: chunks re-hashed into `temp`, then renamed to `path`."""
    if os.path.lexists(path):
        raise Refused(f"refused: {os.fsdecode(path)} already exists")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            written = 0
            for chunk_id, length in e["chunks"]:
                data = packs.chunk(chunk_id, length)
                f.write(data)
                written += len(data)
                counts["chunks"] += 1
            if written != e["size"]:
                raise Refused(f"{os.fsdecode(path)}: restored {written} bytes, the manifest says {e['size']}")
            f.flush()
            os.fchmod(f.fileno(), e["mode"] & 0o777)  # never setuid, setgid or sticky
            os.utime(f.fileno(), ns=(os.fstat(f.fileno()).st_atime_ns, e["mtime"] * 10**9))
            os.fsync(f.fileno())
        os.rename(temp, path)
    except BaseException:
        if os.path.lexists(temp):
            os.unlink(temp)
        raise
    counts["files"] += 1
    counts["bytes"] += e["size"]


def main():
    parser = argparse.ArgumentParser(prog="read-store.py", description="Read an air-gap vault store (store format 1; see docs/STORE-FORMAT.md).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="print the snapshot ids, oldest first")
    p.add_argument("store")
    p = sub.add_parser("restore", help="restore one snapshot into a new or empty directory, verifying everything")
    p.add_argument("store")
    p.add_argument("snapshot")
    p.add_argument("dest")
    p.add_argument("--vault-key", help="the vault's public key, ed25519:<base64> (or a file holding it), from a trusted place")
    p.add_argument("--salvage", action="store_true", help="also take chunks from damaged packs and packs without an index (each still re-hashed); restore every file that can be, list the rest")
    args = parser.parse_args()
    try:
        if args.command == "list":
            cmd_list(args)
        else:
            cmd_restore(args)
    except Refused as e:
        message = str(e)
        print(f"read-store.py: {message if message.startswith('refused') else 'refused: ' + message}", file=sys.stderr)
        sys.exit(1)
    except (Incomplete, OSError) as e:
        print(f"read-store.py: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
