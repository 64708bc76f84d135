#!/usr/bin/env bash
# The CLIs over e2fsprogs' own regression images (tests/*/image.gz of the
# installed e2fsprogs version, fetched by scripts/e2fsprogs-source.sh into
# .cache/): mostly corrupt filesystems. For every regular inode in use:
#   * ext4dio-map --image IMG --inode N --json exits 0 or 1, never by a
#     signal, and when it exits 0 its extents equal debugfs's (`ex` for
#     extent trees, the BLOCKS of `stat` for block maps);
#   * ext4dio-write --image COPY --inode N (a small payload at offset 0;
#     COPY is the image marked clean, so that the other checks are reached)
#     exits 0 or 1; a refusal leaves COPY byte-identical; it is refused for
#     every inode e2fsck -fn pass 1B reports as sharing blocks; when it
#     succeeds, every byte that changed lies in the target's blocks and every
#     other regular inode's data (debugfs dump) is unchanged.
# A fixed sample runs by default; EXT4DIO_CORPUS=all runs all images.
#
# Usage: e2fsprogs_corpus_test.sh SOURCE_ROOT BUILD_DIR
# Exits 77 (skip) only when the images could not be fetched.
set -euo pipefail
src=${1:?source root}
build=${2:?build dir}

tests_dir=
for d in "$src"/.cache/e2fsprogs-*/tests; do [ -d "$d" ] && tests_dir=$d; done
if [ -z "$tests_dir" ] || [ ! -f "$tests_dir/f_dup/image.gz" ]; then
  echo "SKIP: e2fsprogs' test images are not in $src/.cache (scripts/e2fsprogs-source.sh" \
       "could not fetch the Debian source package e2fsprogs)" >&2
  exit 77
fi
for tool in debugfs e2fsck python3; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed" >&2; exit 1; }
done

# The six images where image mode used to write into blocks another inode
# also claims (issue 9 item 14), then a spread of other corruptions: block
# maps and extent trees, bad blocks, bigalloc, quota, uninit extents.
sample=(f_dup f_dup2 f_bbfile f_extents2 f_badcluster f_cloneblock_alloc_error
        f_dup3 f_dupsuper f_bbinode f_extents f_holedir f_badtable f_bitmaps
        f_messy_inode f_lotsbad f_baddir f_dup_de f_dup_ba f_quota f_eofblocks
        f_uninit_ext_past_eof f_big_sparse f_ind_inode_collision)
if [ "${EXT4DIO_CORPUS:-}" = all ]; then
  mapfile -t sample < <(cd "$tests_dir" && ls -d */image.gz | sed 's|/image.gz||' | sort)
fi

work=$(mktemp -d /dev/shm/ext4dio-corpus-XXXXXX 2>/dev/null || mktemp -d /tmp/ext4dio-corpus-XXXXXX)
trap 'rm -rf "$work"' EXIT

python3 - "$tests_dir" "$build" "$work" "${sample[@]}" <<'PY'
import hashlib, json, os, re, shutil, subprocess, sys

tests_dir, build, work = sys.argv[1:4]
names = sys.argv[4:]
MAP = os.path.join(build, "tools", "ext4dio-map")
WRITE = os.path.join(build, "tools", "ext4dio-write")
MAX_INODES = 4096  # per image: enough for every image of the corpus
failures = []
stats = {"images": 0, "inodes": 0, "mapped": 0, "written": 0, "refused_shared": 0}

def fail(name, msg):
    failures.append(f"{name}: {msg}")
    print(f"FAIL {name}: {msg}", file=sys.stderr)

class Hung:
    returncode = -1
    stdout = b""
    stderr = b"timed out after 120 s"

SANITIZER = re.compile(rb"runtime error:|ERROR: \w+Sanitizer|LeakSanitizer")

def run(argv, **kw):
    try:
        r = subprocess.run(argv, capture_output=True, timeout=120, **kw)
    except subprocess.TimeoutExpired:
        if argv[0] in (MAP, WRITE):
            fail(os.path.basename(argv[0]), f"{' '.join(argv)} hung (120 s)")
        return Hung()
    # In sanitizer builds a report may exit 1, like a refusal: look for it.
    if argv[0] in (MAP, WRITE) and SANITIZER.search(r.stderr):
        fail(os.path.basename(argv[0]), f"{' '.join(argv)}: sanitizer report: "
                                        f"{r.stderr.decode('utf-8', 'replace')[-600:]}")
    return r

def debugfs_script(image, cmds):
    """Runs debugfs -f over `cmds`; returns {cmd: output}, or None."""
    script = os.path.join(work, "cmds")
    with open(script, "w") as f:
        f.write("\n".join(cmds) + "\n")
    for flags in ([], ["-c"]):
        r = run(["debugfs"] + flags + ["-f", script, image])
        out = r.stdout.decode("utf-8", "replace")
        if "debugfs: " not in out:
            continue
        res, cur = {}, None
        for line in out.splitlines():
            if line.startswith("debugfs: "):
                cur = line[len("debugfs: "):]
                res[cur] = []
            elif cur is not None:
                res[cur].append(line)
        return {k: "\n".join(v) for k, v in res.items()}
    return None

def merge(exts):
    out = []
    for e in sorted(exts):
        if out and out[-1][0] + out[-1][2] == e[0] and out[-1][1] + out[-1][2] == e[1] \
                and out[-1][3] == e[3]:
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + e[2], e[3])
        else:
            out.append(e)
    return out

LEAF = re.compile(r"^\s*(\d+)/\s*(\d+)\s+\d+/\s*\d+\s+(\d+)\s*-\s*(\d+)\s+(\d+)\s*-\s*(\d+)\s+(\d+)\s*(\S*)")
ITEM = re.compile(r"\((\d+)(?:-(\d+))?\):(\d+)(?:-(\d+))?")

def debugfs_extents(ex_text):
    out = []
    for line in ex_text.splitlines():
        m = LEAF.search(line)
        if m and m.group(1) == m.group(2):
            out.append((int(m.group(3)), int(m.group(5)), int(m.group(7)), m.group(8) == "Uninit"))
    return merge(out)

def debugfs_blockmap(stat_text):
    pos = stat_text.find("BLOCKS:")
    if pos < 0:
        return []
    out = []
    for m in ITEM.finditer(stat_text[pos:]):
        l0 = int(m.group(1)); l1 = int(m.group(2)) if m.group(2) else l0
        out.append((l0, int(m.group(3)), l1 - l0 + 1, False))
    return merge(out)

def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()

def dumps(image, inodes, tag):
    """sha256 of each inode's data through debugfs dump (None if unreadable)."""
    d = os.path.join(work, "dump-" + tag)
    shutil.rmtree(d, ignore_errors=True); os.mkdir(d)
    debugfs_script(image, [f"dump <{i}> {d}/{i}" for i in inodes])
    return {i: (sha(f"{d}/{i}") if os.path.exists(f"{d}/{i}") else None) for i in inodes}

def changed_ranges(a, b):
    with open(a, "rb") as f: x = f.read()
    with open(b, "rb") as f: y = f.read()
    if len(x) != len(y):
        return [(0, max(len(x), len(y)))]
    out, step, i = [], 4096, 0
    while i < len(x):
        if x[i:i + step] != y[i:i + step]:
            j = i
            while j < min(len(x), i + step) and x[j] == y[j]: j += 1
            k = min(len(x), i + step)
            while k > j and x[k - 1] == y[k - 1]: k -= 1
            out.append((j, k))
        i += step
    return out

for name in names:
    gz = os.path.join(tests_dir, name, "image.gz")
    if not os.path.exists(gz):
        fail(name, "no image.gz in the corpus")
        continue
    img = os.path.join(work, "img")
    with open(img, "wb") as f:
        if subprocess.run(["gzip", "-dc", gz], stdout=f).returncode != 0:
            print(f"note {name}: image.gz does not decompress; skipped", file=sys.stderr)
            continue
    stats["images"] += 1
    st = debugfs_script(img, ["stats"]) or {}
    m = re.search(r"Inode count:\s*(\d+)", st.get("stats", ""))
    count = min(int(m.group(1)), MAX_INODES) if m else 64
    info = debugfs_script(img, [f"stat <{i}>" for i in range(1, count + 1)] +
                          [f"ex <{i}>" for i in range(1, count + 1)]) or {}
    regular = {}
    for i in range(1, count + 1):
        s = info.get(f"stat <{i}>", "")
        mt = re.search(r"Type:\s*(\S+)", s)
        ml = re.search(r"Links:\s*(\d+)", s)
        if mt and mt.group(1) == "regular" and ml and int(ml.group(1)) > 0:
            fl = re.search(r"Flags:\s*0x([0-9a-fA-F]+)", s)
            sz = re.search(r"Size:\s*(\d+)", s)
            regular[i] = {"extents": bool(fl and int(fl.group(1), 16) & 0x80000),
                          "size": int(sz.group(1)) if sz else 0, "stat": s,
                          "ex": info.get(f"ex <{i}>", "")}
    if not m:  # debugfs cannot read it: the map must still not crash
        for i in range(1, count + 1):
            r = run([MAP, "--image", img, "--inode", str(i), "--json"])
            if r.returncode not in (0, 1):
                fail(name, f"ext4dio-map inode {i} exited {r.returncode}: {r.stderr[-300:]!r}")
        continue
    # Inodes e2fsck's pass 1B says share blocks.
    # Some images send e2fsck -n into an endless loop of messages: what it
    # printed within 30 s (pass 1B comes early) is a lower bound.
    e2out = os.path.join(work, "e2fsck.out")
    with open(e2out, "wb") as f:
        p = subprocess.Popen(["e2fsck", "-fn", img], stdout=f, stderr=subprocess.STDOUT)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill(); p.wait()
            print(f"note {name}: e2fsck -fn did not finish in 30 s", file=sys.stderr)
    with open(e2out, "rb") as f:
        e2 = f.read(32 << 20).decode("utf-8", "replace")
    shared = {int(x) for x in re.findall(r"Multiply-claimed block\(s\) in inode (\d+)", e2)}
    # Writes go to copies of `base`: the image marked clean (most of these
    # are marked "not clean" or "errors", which alone refuses every write),
    # so that the checks behind that one are what is exercised.
    base = os.path.join(work, "base")
    shutil.copyfile(img, base)
    run(["debugfs", "-w", "-R", "ssv state 1", base])
    copy = os.path.join(work, "copy")
    shutil.copyfile(base, copy)
    others_before = None
    for ino, meta in sorted(regular.items()):
        stats["inodes"] += 1
        r = run([MAP, "--image", img, "--inode", str(ino), "--json"])
        if r.returncode not in (0, 1):
            fail(name, f"ext4dio-map inode {ino} exited {r.returncode}: "
                       f"{r.stderr.decode('utf-8', 'replace')[-300:]}")
            continue
        target = []
        if r.returncode == 0:
            stats["mapped"] += 1
            j = json.loads(r.stdout)
            ours = merge([(e["logical_block"], e["physical_block"], e["blocks"], e["unwritten"])
                          for e in j["extents"]])
            theirs = debugfs_extents(meta["ex"]) if meta["extents"] else debugfs_blockmap(meta["stat"])
            if ours != theirs:
                fail(name, f"inode {ino}: ext4dio-map {ours} but debugfs {theirs}")
            bs = j["block_size"]
            target = [(e["physical_block"] * bs, (e["physical_block"] + e["blocks"]) * bs)
                      for e in j["extents"]]
        n = min(512, meta["size"])
        if n == 0:
            continue
        payload = os.path.join(work, "payload")
        with open(payload, "wb") as f:
            f.write(os.urandom(n))
        w = run([WRITE, "--image", copy, "--inode", str(ino), "--input", payload])
        err = w.stderr.decode("utf-8", "replace")
        if w.returncode not in (0, 1):
            fail(name, f"ext4dio-write inode {ino} exited {w.returncode}: {err[-300:]}")
        if w.returncode != 0:
            if ino in shared:
                stats["refused_shared"] += 1
            if changed_ranges(base, copy):
                fail(name, f"inode {ino}: a refused write changed the image ({err.strip()})")
                shutil.copyfile(base, copy)
            continue
        stats["written"] += 1
        if ino in shared:
            fail(name, f"inode {ino}: e2fsck says it shares blocks, but the write succeeded")
        for a, b in changed_ranges(base, copy):
            if not any(s <= a and b <= e for s, e in target):
                fail(name, f"inode {ino}: bytes {a}..{b} changed outside the file's blocks")
        others = [i for i in regular if i != ino]
        if others_before is None:
            others_before = dumps(base, list(regular), "before")
        after = dumps(copy, others, "after")
        for i in others:
            if after[i] != others_before[i]:
                fail(name, f"writing inode {ino} changed inode {i}'s data")
        shutil.copyfile(base, copy)
    print(f"{name}: {len(regular)} regular inodes, e2fsck pass 1B: {sorted(shared)}",
          file=sys.stderr)

print(f"corpus: {stats['images']} images, {stats['inodes']} inodes, {stats['mapped']} mapped, "
      f"{stats['written']} written, {stats['refused_shared']} shared-block inodes refused, "
      f"{len(failures)} failures", file=sys.stderr)
sys.exit(1 if failures else 0)
PY
