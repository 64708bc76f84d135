#include "ext4_reader.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <unordered_set>
#include <thread>
#include <utility>

#include <ext2fs/ext2fs.h>
// e2p's header has no extern "C" of its own.
extern "C" {
#include <e2p/e2p.h>
}

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "errors.h"
#include "ownership.h"

namespace ext4dio {
namespace {

// The features in `bits` of kind `compat` (E2P_FEATURE_*), as e2fsprogs
// spells them ("FEATURE_I31" for a bit it does not know either).
std::string FeatureNames(int compat, uint32_t bits) {
  std::vector<std::string> names;
  for (int i = 0; i < 32; ++i) {
    if (!(bits & (1u << i))) continue;
    char name[64];
    e2p_feature_to_string(compat, 1u << i, name, sizeof name);  // not the static buffer
    names.emplace_back(name);
  }
  return absl::StrJoin(names, ", ");
}

// The incompat features of the superblock at `offset` in `source` that
// libext2fs cannot open, named ("" when the superblock cannot be read):
// libext2fs's refusal itself does not say which.
std::string UnsupportedIncompat(const std::string& source, uint64_t offset) {
  // Non-blocking, and only files and block devices: a FIFO would wait here.
  const int fd = ::open(source.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return "";
  struct stat st;
  ext2_super_block sb;
  ssize_t n = -1;
  if (::fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))
    n = ::pread(fd, &sb, sizeof sb, static_cast<off_t>(offset + SUPERBLOCK_OFFSET));
  ::close(fd);
  if (n != static_cast<ssize_t>(sizeof sb) || ext2fs_le16_to_cpu(sb.s_magic) != EXT2_SUPER_MAGIC)
    return "";
  const uint32_t bits = ext2fs_le32_to_cpu(sb.s_feature_incompat) &
                        ~static_cast<uint32_t>(EXT2_LIB_FEATURE_INCOMPAT_SUPP |
                                               EXT2_LIB_SOFTSUPP_INCOMPAT);
  if (bits == 0) return "";
  return absl::StrFormat("%s (incompat bits 0x%x)", FeatureNames(E2P_FEATURE_INCOMPAT, bits),
                         bits);
}

// Marks a status as a checksum failure: on a live filesystem these can be a
// block caught mid-update, so they are retried before being reported.
constexpr absl::string_view kChecksumPayload = "ext4dio/checksum";

absl::Status ChecksumError(absl::string_view message) {
  absl::Status s = LibError(EXT4DIO_E_CORRUPT_MAP, message);
  s.SetPayload(kChecksumPayload, absl::Cord("1"));
  return s;
}

bool IsChecksumError(const absl::Status& s) {
  return s.GetPayload(kChecksumPayload).has_value();
}

absl::Status CorruptMap(absl::string_view message) {
  return LibError(EXT4DIO_E_CORRUPT_MAP, message);
}

std::string FileType(uint16_t mode) {
  if (LINUX_S_ISDIR(mode)) return "a directory";
  if (LINUX_S_ISLNK(mode)) return "a symbolic link";
  if (LINUX_S_ISCHR(mode)) return "a character device";
  if (LINUX_S_ISBLK(mode)) return "a block device";
  if (LINUX_S_ISFIFO(mode)) return "a FIFO";
  if (LINUX_S_ISSOCK(mode)) return "a socket";
  return absl::StrFormat("of unknown type (mode 0%o)", mode);
}

// Size of an image file or block device.
absl::StatusOr<uint64_t> SourceSize(const std::string& source) {
  int fd = ::open(source.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, absl::StrCat("open ", source));
  absl::Cleanup closer = [fd] { ::close(fd); };
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoError(errno, absl::StrCat("stat ", source));
  if (S_ISREG(st.st_mode)) return static_cast<uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    uint64_t bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0)
      return ErrnoError(errno, absl::StrCat("BLKGETSIZE64 ", source));
    return bytes;
  }
  return ErrnoError(EINVAL, absl::StrCat(source, ": not an image file or block device"));
}

struct BlockCollector {
  std::vector<std::pair<uint64_t, uint64_t>>* runs;  // [start, end)
  uint64_t limit;
  uint64_t seen = 0;
  bool over_limit = false;
};

int CollectBlock(ext2_filsys, blk64_t* blocknr, e2_blkcnt_t, blk64_t, int,
                 void* priv) {
  auto* c = static_cast<BlockCollector*>(priv);
  if (++c->seen > c->limit) {
    c->over_limit = true;
    return BLOCK_ABORT;
  }
  if (!c->runs->empty() && c->runs->back().second == *blocknr) {
    c->runs->back().second++;
  } else {
    c->runs->emplace_back(*blocknr, *blocknr + 1);
  }
  return 0;
}

struct BlockMapWalk {
  std::vector<Extent>* extents;
  std::vector<uint64_t>* map_blocks;
  uint64_t limit;
  uint64_t seen = 0;
  bool over_limit = false;
  bool logical_overflow = false;
};

int WalkBlockMap(ext2_filsys, blk64_t* blocknr, e2_blkcnt_t blockcnt, blk64_t,
                 int, void* priv) {
  auto* w = static_cast<BlockMapWalk*>(priv);
  if (++w->seen > w->limit) {
    w->over_limit = true;
    return BLOCK_ABORT;
  }
  if (blockcnt < 0) {  // an indirect block of the file itself
    w->map_blocks->push_back(*blocknr);
    return 0;
  }
  uint64_t logical = static_cast<uint64_t>(blockcnt);
  if (logical >= ExtentMap::kLogicalLimit) {
    w->logical_overflow = true;
    return BLOCK_ABORT;
  }
  if (!w->extents->empty()) {
    Extent& last = w->extents->back();
    if (last.logical + last.length == logical &&
        last.physical + last.length == *blocknr && last.length < UINT32_MAX) {
      last.length++;
      return 0;
    }
  }
  w->extents->push_back(Extent{logical, *blocknr, 1, false});
  return 0;
}

// ext2fs_check_desc checks where each group's metadata lies; neither it nor
// ext2fs_open2 verifies the descriptors' checksums, and one flipped bit in
// an inode table location would make metadata look like free space.
absl::Status CheckDescriptors(ext2_filsys fs, const std::string& source) {
  errcode_t err = ext2fs_check_desc(fs);
  if (err != 0) {
    return Ext2fsError(err, EXT4DIO_E_CORRUPT_FS,
                       absl::StrCat(source, ": bad group descriptors"));
  }
  if (ext2fs_has_group_desc_csum(fs)) {
    for (dgrp_t g = 0; g < fs->group_desc_count; ++g) {
      if (!ext2fs_group_desc_csum_verify(fs, g)) {
        return LibError(EXT4DIO_E_CORRUPT_FS,
                        absl::StrFormat("%s: the group descriptor of group %d fails its "
                                        "checksum", source, g));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<Extent> MergeContiguous(const std::vector<Extent>& extents) {
  std::vector<Extent> out;
  out.reserve(extents.size());
  for (const Extent& e : extents) {
    if (!out.empty()) {
      Extent& last = out.back();
      if (last.unwritten == e.unwritten &&
          last.logical + last.length == e.logical &&
          last.physical + last.length == e.physical &&
          uint64_t{last.length} + e.length <= UINT32_MAX) {
        last.length += e.length;
        continue;
      }
    }
    out.push_back(e);
  }
  return out;
}

Ext4Reader::Ext4Reader(std::string source, const ReaderOptions& options)
    : source_(std::move(source)), options_(options) {}

Ext4Reader::~Ext4Reader() {
  MutexLock lock(&mu_);
  if (fs_ != nullptr) ext2fs_close_free(&fs_);
}

absl::StatusOr<std::unique_ptr<Ext4Reader>> Ext4Reader::Open(
    const std::string& source, const ReaderOptions& options) {
  absl::StatusOr<std::unique_ptr<Ext4Reader>> r = OpenOnce(source, options);
  // A mounted filesystem rewrites descriptors (free counts, checksums) with
  // every allocation: a torn read of one is not corruption until it stays.
  for (int attempt = 2; options.live && !r.ok() && attempt <= kChecksumRetries; ++attempt) {
    if (CodeOf(r.status()) != -EXT4DIO_E_CORRUPT_FS && !IsChecksumError(r.status())) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(attempt));
    r = OpenOnce(source, options);
    if (!r.ok() && attempt == kChecksumRetries)
      return Prefixed(absl::StrFormat("after %d attempts: ", attempt), r.status());
  }
  return r;
}

absl::StatusOr<std::unique_ptr<Ext4Reader>> Ext4Reader::OpenOnce(
    const std::string& source, const ReaderOptions& options) {
  auto size = SourceSize(source);
  if (!size.ok()) return size.status();
  if (*size < options.offset || *size - options.offset < 2048) {
    return LibError(EXT4DIO_E_TRUNCATED,
                    absl::StrFormat("%s: %d bytes from offset %d cannot hold "
                                    "an ext2/3/4 superblock",
                                    source, *size < options.offset ? 0 : *size - options.offset,
                                    options.offset));
  }
  std::unique_ptr<Ext4Reader> r(new Ext4Reader(source, options));
  r->source_size_ = *size;

  // cache=off: unix_io's small block cache is not dropped by
  // io_channel_flush, and a live filesystem changes under it.
  std::string io_options = absl::StrFormat("offset=%d&cache=off", options.offset);
  ext2_filsys fs = nullptr;
  // No EXT2_FLAG_IGNORE_SB_ERRORS: it switches off libext2fs' sanity checks
  // of descriptor size, inode count and meta_bg. No RW flag: read-only.
  errcode_t err = ext2fs_open2(
      source.c_str(), io_options.c_str(),
      EXT2_FLAG_64BITS | EXT2_FLAG_SOFTSUPP_FEATURES | EXT2_FLAG_SKIP_MMP, 0, 0,
      unix_io_manager, &fs);
  if (err != 0) {
    std::string where = options.offset
        ? absl::StrFormat("%s (at byte offset %d)", source, options.offset)
        : source;
    switch (err) {
      case EXT2_ET_BAD_MAGIC:
        return LibError(EXT4DIO_E_NOT_EXT4,
                        absl::StrCat(where, ": not an ext2/ext3/ext4 filesystem "
                                            "(no superblock magic)"));
      case EXT2_ET_UNSUPP_FEATURE:
      case EXT2_ET_RO_UNSUPP_FEATURE:
      case EXT2_ET_REV_TOO_HIGH: {
        const std::string which =
            err == EXT2_ET_UNSUPP_FEATURE ? UnsupportedIncompat(source, options.offset) : "";
        return LibError(EXT4DIO_E_UNSUPPORTED_FS,
                        absl::StrCat(where, ": ", Ext2fsMessage(err),
                                     which.empty() ? "" : ": ", which));
      }
      case EXT2_ET_SHORT_READ:
        return LibError(EXT4DIO_E_TRUNCATED,
                        absl::StrCat(where, ": truncated: ", Ext2fsMessage(err)));
      default:
        return Ext2fsError(err, EXT4DIO_E_CORRUPT_FS,
                           absl::StrCat(where, ": bad superblock or group "
                                               "descriptors"));
    }
  }
  MutexLock lock(&r->mu_);
  r->fs_ = fs;
  r->block_size_ = fs->blocksize;
  r->blocks_count_ = ext2fs_blocks_count(fs->super);

  const uint64_t available = *size - options.offset;
  if (r->blocks_count_ > available / r->block_size_) {
    return LibError(
        EXT4DIO_E_TRUNCATED,
        absl::StrFormat("%s: truncated: the filesystem is %d blocks of %d "
                        "bytes (%d bytes) but only %d bytes are there",
                        source, r->blocks_count_, r->block_size_,
                        r->blocks_count_ * r->block_size_, available));
  }
  if (absl::Status s = CheckDescriptors(fs, source); !s.ok()) return s;

  uint64_t lo = 0, hi = 0;
  std::memcpy(&lo, fs->super->s_uuid, 8);
  std::memcpy(&hi, fs->super->s_uuid + 8, 8);
  r->fsid_ = lo ^ hi;  // ext4_statfs: le64(uuid[0..8]) ^ le64(uuid[8..16])

  if (fs->super->s_state & EXT2_ERROR_FS)
    r->warnings_.push_back("the filesystem is marked as having errors");
  if (ext2fs_has_feature_journal_needs_recovery(fs->super))
    if (!options.live) r->warnings_.push_back("the journal needs recovery: on-disk metadata may be stale");
  if (!options.live && options.offset == 0) {
    int flags = 0;
    char mountpoint[4096] = {0};
    if (ext2fs_check_mount_point(source.c_str(), &flags, mountpoint,
                                 sizeof mountpoint) == 0 &&
        (flags & EXT2_MF_MOUNTED)) {
      r->warnings_.push_back(absl::StrCat(
          "it is mounted", mountpoint[0] ? absl::StrCat(" on ", mountpoint) : "",
          ": the map may change under us"));
    }
  }
  return r;
}

absl::StatusOr<uint64_t> Ext4Reader::LookupPath(absl::string_view path) {
  MutexLock lock(&mu_);
  std::string p(path);
  while (!p.empty() && p.front() == '/') p.erase(p.begin());
  if (p.empty()) return EXT2_ROOT_INO;
  ext2_ino_t ino = 0;
  errcode_t err =
      ext2fs_namei_follow(fs_, EXT2_ROOT_INO, EXT2_ROOT_INO, p.c_str(), &ino);
  if (err == EXT2_ET_INODE_CSUM_INVALID) {
    // namei_follow reads the final inode to see whether it is a symlink.
    // Resolve without following: ReadFile then reports the bad inode the
    // same way it does for an inode number.
    err = ext2fs_namei(fs_, EXT2_ROOT_INO, EXT2_ROOT_INO, p.c_str(), &ino);
  }
  if (err == 0) return ino;
  std::string where = absl::StrCat(path, " in ", source_);
  switch (err) {
    case EXT2_ET_FILE_NOT_FOUND: return ErrnoError(ENOENT, where);
    case EXT2_ET_NO_DIRECTORY: return ErrnoError(ENOTDIR, where);
    case EXT2_ET_SYMLINK_LOOP: return ErrnoError(ELOOP, where);
    default: return Ext2fsError(err, EXT4DIO_E_CORRUPT_FS, where);
  }
}

absl::Status Ext4Reader::CheckInodeAllocated(uint64_t inode) {
  const uint32_t per_group = fs_->super->s_inodes_per_group;
  const dgrp_t group = static_cast<dgrp_t>((inode - 1) / per_group);
  const uint32_t bit = static_cast<uint32_t>((inode - 1) % per_group);
  auto not_in_use = [&](absl::string_view why) {
    return LibError(EXT4DIO_E_NOT_IN_USE,
                    absl::StrFormat("%s: inode %d is not in use (%s)", source_,
                                    inode, why));
  };
  if (ext2fs_has_group_desc_csum(fs_) &&
      (ext2fs_bg_flags(fs_, group) & EXT2_BG_INODE_UNINIT)) {
    return not_in_use(absl::StrFormat("group %d has no inodes in use", group));
  }
  std::vector<unsigned char> buf(fs_->blocksize);
  errcode_t err = io_channel_read_blk64(fs_->io, ext2fs_inode_bitmap_loc(fs_, group),
                                        1, buf.data());
  if (err != 0) {
    return Ext2fsError(err, EXT4DIO_E_CORRUPT_FS,
                       absl::StrFormat("%s: reading the inode bitmap of group %d",
                                       source_, group));
  }
  if (ext2fs_has_feature_metadata_csum(fs_->super) &&
      !ext2fs_inode_bitmap_csum_verify(fs_, group,
                                       reinterpret_cast<char*>(buf.data()),
                                       per_group / 8)) {
    return ChecksumError(absl::StrFormat(
        "%s: the inode bitmap of group %d fails its checksum", source_, group));
  }
  if (!(buf[bit / 8] & (1u << (bit % 8))))
    return not_in_use(absl::StrFormat("free in the inode bitmap of group %d", group));
  return absl::OkStatus();
}

absl::Status Ext4Reader::Refresh() {
  // Group descriptors (flags, free counts, bitmap checksums) change on a
  // live filesystem: read them afresh.
  ext2_filsys fresh = nullptr;
  std::string io_options = absl::StrFormat("offset=%d&cache=off", options_.offset);
  errcode_t err = ext2fs_open2(
      source_.c_str(), io_options.c_str(),
      EXT2_FLAG_64BITS | EXT2_FLAG_SOFTSUPP_FEATURES | EXT2_FLAG_SKIP_MMP, 0, 0,
      unix_io_manager, &fresh);
  absl::Status desc = err == 0 ? CheckDescriptors(fresh, source_)
                               : Ext2fsError(err, EXT4DIO_E_CORRUPT_FS,
                                             absl::StrCat(source_, ": re-reading the superblock"));
  if (!desc.ok()) {
    if (fresh) ext2fs_close_free(&fresh);
    return desc;
  }
  ext2fs_close_free(&fs_);
  fs_ = fresh;
  metadata_built_ = false;
  return absl::OkStatus();
}

template <typename T, typename F>
T Ext4Reader::Retrying(F&& once, bool refresh_first) {
  for (int attempt = 1;; ++attempt) {
    if (options_.live && (refresh_first || attempt > 1)) {
      if (absl::Status s = Refresh(); !s.ok()) {
        if (attempt < kChecksumRetries) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10 * attempt));
          continue;
        }
        return s;
      }
    }
    ext2fs_flush_icache(fs_);
    T result = once();
    // Without a refresh first, any failure may come from stale descriptors
    // (a group initialised since, a new bitmap checksum): try again fresh.
    if (!result.ok() && options_.live && !refresh_first && attempt == 1) continue;
    if (result.ok() || !options_.live || !IsChecksumError(result.status()) ||
        attempt >= kChecksumRetries) {
      if (!result.ok() && IsChecksumError(result.status()) && options_.live) {
        return Prefixed(absl::StrFormat("after %d attempts: ", attempt), result.status());
      }
      return result;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10 * attempt));
  }
}

absl::StatusOr<FileLayout> Ext4Reader::ReadFile(uint64_t inode) {
  MutexLock lock(&mu_);
  return Retrying<absl::StatusOr<FileLayout>>([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ReadFileOnce(inode); },
                                              /*refresh_first=*/true);
}

absl::StatusOr<FileLayout> Ext4Reader::ReadFileOnce(uint64_t inode) {
  ext2_super_block* sb = fs_->super;
  if (inode == 0 || inode > sb->s_inodes_count) {
    return LibError(EXT4DIO_E_NOT_IN_USE,
                    absl::StrFormat("%s: inode %d does not exist (the filesystem "
                                    "has inodes 1..%d)",
                                    source_, inode, sb->s_inodes_count));
  }
  if (inode < EXT2_FIRST_INO(sb)) {
    return LibError(EXT4DIO_E_UNSUPPORTED_FILE,
                    absl::StrFormat("%s: inode %d is a reserved inode (root, "
                                    "journal, resize, quota...), not a user file",
                                    source_, inode));
  }
  // Live: the caller holds the file open, so the kernel has the inode in
  // use; its bitmap is rewritten with every inode allocated in the group,
  // and on a busy filesystem a read of it and its descriptor's checksum
  // rarely agree (an open failed "fails its checksum" 5 times in a row
  // while another process created symlinks).
  if (!options_.live) {
    if (absl::Status s = CheckInodeAllocated(inode); !s.ok()) return s;
  }

  const int inode_size = EXT2_INODE_SIZE(sb);
  std::vector<char> inode_buf(std::max<size_t>(inode_size, sizeof(ext2_inode_large)));
  auto* in = reinterpret_cast<ext2_inode*>(inode_buf.data());
  errcode_t err = ext2fs_read_inode2(fs_, static_cast<ext2_ino_t>(inode), in,
                                     inode_size, 0);
  const std::string who = absl::StrFormat("%s: inode %d", source_, inode);
  if (err == EXT2_ET_INODE_CSUM_INVALID)
    return ChecksumError(absl::StrCat(who, " fails its checksum"));
  if (err != 0) return Ext2fsError(err, EXT4DIO_E_CORRUPT_FS, who);

  auto refuse = [&](absl::string_view why) {
    return LibError(EXT4DIO_E_UNSUPPORTED_FILE, absl::StrCat(who, " ", why));
  };
  if (in->i_mode == 0 && in->i_links_count == 0)
    return LibError(EXT4DIO_E_NOT_IN_USE, absl::StrCat(who, " is not in use (mode 0)"));
  if (!LINUX_S_ISREG(in->i_mode))
    return refuse(absl::StrCat("is not a regular file: it is ", FileType(in->i_mode)));
  const uint32_t flags = in->i_flags;
  if (flags & EXT4_INLINE_DATA_FL)
    return refuse("keeps its data inline in the inode (inline_data): it has no "
                  "blocks to map");
  if (flags & EXT4_ENCRYPT_FL)
    return refuse("is encrypted (fscrypt): its blocks hold ciphertext");
  if (flags & EXT4_VERITY_FL)
    return refuse("has fs-verity enabled: its data is read-only and authenticated");
  if (flags & EXT3_JOURNAL_DATA_FL)
    return refuse("has per-file data journaling (chattr +j): its data must go "
                  "through the journal");
  if (flags & EXT4_EA_INODE_FL)
    return refuse("is an extended-attribute inode, not a user file");

  FileLayout layout;
  layout.inode = inode;
  layout.size = EXT2_I_SIZE(in);
  layout.block_size = fs_->blocksize;
  layout.cluster_size = EXT2_CLUSTER_SIZE(sb);
  layout.extent_tree = (flags & EXT4_EXTENTS_FL) != 0;
  layout.flags = flags;

  // Every block the file maps (data and index) is counted in i_blocks, so it
  // bounds the walk: a hostile tree cannot make it run away.
  const uint64_t i_blocks_512 = ext2fs_get_stat_i_blocks(fs_, in);
  const uint64_t limit = std::min<uint64_t>(
      i_blocks_512 / (fs_->blocksize / 512), blocks_count_);

  if (layout.extent_tree) {
    ext2_extent_handle_t handle = nullptr;
    err = ext2fs_extent_open2(fs_, static_cast<ext2_ino_t>(inode), in, &handle);
    if (err != 0) {
      return CorruptMap(absl::StrCat(who, ": bad extent tree root: ",
                                     Ext2fsMessage(err)));
    }
    absl::Cleanup free_handle = [handle] { ext2fs_extent_free(handle); };
    ext2_extent_info info;
    err = ext2fs_extent_get_info(handle, &info);
    if (err != 0) return CorruptMap(absl::StrCat(who, ": ", Ext2fsMessage(err)));
    if (info.max_depth > kMaxDepth) {
      return CorruptMap(absl::StrFormat("%s: extent tree depth %d exceeds %d",
                                        who, info.max_depth, kMaxDepth));
    }
    layout.depth = static_cast<uint32_t>(info.max_depth);
    ext2fs_extent e;
    uint64_t entries = 0;
    uint64_t leaves_end = 0;  // end of the last leaf extent seen
    std::unordered_set<uint64_t> tree_blocks;
    std::vector<unsigned char> child(fs_->blocksize);
    for (err = ext2fs_extent_get(handle, EXT2_EXTENT_ROOT, &e);;
         err = ext2fs_extent_get(handle, EXT2_EXTENT_NEXT, &e)) {
      if (err == EXT2_ET_EXTENT_NO_NEXT) break;
      if (err == EXT2_ET_EXTENT_CSUM_INVALID) {
        return ChecksumError(absl::StrFormat(
            "%s: an extent tree block (below logical block %d) fails its "
            "checksum", who, e.e_lblk));
      }
      if (err != 0) {
        return CorruptMap(absl::StrFormat(
            "%s: extent tree unreadable after %d entries: %s", who,
            layout.extents.size(), Ext2fsMessage(err)));
      }
      if (e.e_flags & EXT2_EXTENT_FLAGS_SECOND_VISIT) continue;
      if (++entries > limit) {
        return CorruptMap(absl::StrFormat(
            "%s: extent tree has more than %d entries, more than i_blocks "
            "(%d blocks) allows", who, limit, limit));
      }
      if (e.e_flags & EXT2_EXTENT_FLAGS_LEAF) {
        if (e.e_len == 0) {
          return CorruptMap(absl::StrFormat(
              "%s: extent at logical block %d has length 0", who, e.e_lblk));
        }
        layout.extents.push_back(
            Extent{e.e_lblk, e.e_pblk, e.e_len,
                   (e.e_flags & EXT2_EXTENT_FLAGS_UNINIT) != 0});
        leaves_end = std::max<uint64_t>(leaves_end, uint64_t{e.e_lblk} + e.e_len);
      } else {
        // libext2fs walks by the root's depth and trusts each index entry;
        // check what the kernel checks before it descends (the walk then
        // reads the same block): each tree block reached once, its header's
        // depth matching its level, its first entry starting where the
        // index entry says, and everything before it ending by then.
        if (!tree_blocks.insert(e.e_pblk).second) {
          return CorruptMap(absl::StrFormat(
              "%s: extent tree block %d is reached twice (a loop or a shared subtree)",
              who, e.e_pblk));
        }
        if (leaves_end > e.e_lblk) {
          return CorruptMap(absl::StrFormat(
              "%s: extent tree index entry for logical block %d (block %d) starts "
              "before the extents in front of it end (%d)",
              who, e.e_lblk, e.e_pblk, leaves_end));
        }
        ext2_extent_info here;
        if (ext2fs_extent_get_info(handle, &here) != 0 || e.e_pblk < sb->s_first_data_block ||
            e.e_pblk >= blocks_count_) {
          return CorruptMap(absl::StrFormat(
              "%s: extent tree index block %d lies outside the filesystem", who, e.e_pblk));
        }
        err = io_channel_read_blk64(fs_->io, e.e_pblk, 1, child.data());
        if (err != 0) {
          return CorruptMap(absl::StrFormat("%s: reading extent tree block %d: %s", who,
                                            e.e_pblk, Ext2fsMessage(err)));
        }
        ext3_extent_header hdr;
        std::memcpy(&hdr, child.data(), sizeof hdr);
        const int want_depth = here.max_depth - here.curr_level - 1;
        uint32_t first = 0;
        std::memcpy(&first, child.data() + sizeof hdr, sizeof first);
        if (ext2fs_le16_to_cpu(hdr.eh_magic) != EXT3_EXT_MAGIC) {
          return CorruptMap(absl::StrFormat("%s: extent tree block %d has no extent header",
                                            who, e.e_pblk));
        }
        if (ext2fs_le16_to_cpu(hdr.eh_depth) != want_depth) {
          return CorruptMap(absl::StrFormat(
              "%s: extent tree block %d says depth %d but sits where depth %d belongs",
              who, e.e_pblk, ext2fs_le16_to_cpu(hdr.eh_depth), want_depth));
        }
        if (ext2fs_le16_to_cpu(hdr.eh_entries) == 0 || ext2fs_le32_to_cpu(first) != e.e_lblk) {
          return CorruptMap(absl::StrFormat(
              "%s: extent tree block %d starts at logical block %d but its index entry "
              "says %d", who, e.e_pblk, ext2fs_le32_to_cpu(first), e.e_lblk));
        }
        layout.map_blocks.push_back(e.e_pblk);
      }
    }
  } else {
    BlockMapWalk walk{&layout.extents, &layout.map_blocks, limit};
    err = ext2fs_block_iterate3(fs_, static_cast<ext2_ino_t>(inode),
                                BLOCK_FLAG_READ_ONLY, nullptr, WalkBlockMap,
                                &walk);
    if (walk.over_limit) {
      return CorruptMap(absl::StrFormat(
          "%s: block map holds more than %d blocks, more than i_blocks allows",
          who, limit));
    }
    if (walk.logical_overflow)
      return CorruptMap(absl::StrCat(who, ": block map reaches past 2^32 blocks"));
    if (err != 0) {
      return CorruptMap(absl::StrCat(who, ": block map unreadable: ",
                                     Ext2fsMessage(err)));
    }
  }

  uint64_t mapped = layout.map_blocks.size();
  for (const Extent& x : layout.extents) mapped += x.length;
  if (mapped > limit) {
    return CorruptMap(absl::StrFormat(
        "%s: maps %d blocks but i_blocks accounts for only %d", who, mapped,
        limit));
  }
  // Structural checks (sorted, non-overlapping, in range) come from the map
  // builder; run them here so every reader error names the inode.
  MapGeometry geometry{fs_->blocksize, options_.offset, layout.size};
  auto map = ExtentMap::Build(geometry, layout.extents);
  if (!map.ok()) return CorruptMap(absl::StrCat(who, ": ", map.status().message()));
  layout.map = std::move(*map);
  if (absl::Status s = Validate(layout.extents, layout.map_blocks); !s.ok()) {
    return Prefixed(absl::StrCat(who, ": "), s);
  }
  return layout;
}

absl::Status Ext4Reader::WriteRefusal() {
  MutexLock lock(&mu_);
  ext2_super_block* sb = fs_->super;
  auto refuse = [&](absl::string_view why) {
    return LibError(EXT4DIO_E_WRITE_REFUSED, absl::StrCat(source_, ": ", why));
  };
  if (ext2fs_has_feature_journal_needs_recovery(sb))
    return refuse("the journal needs recovery (mount it once or run e2fsck) before writing");
  if (sb->s_state & EXT2_ERROR_FS)
    return refuse("the filesystem is marked as having errors (run e2fsck) before writing");
  if (!(sb->s_state & EXT2_VALID_FS))
    return refuse("the filesystem was not cleanly unmounted (mounted elsewhere, or needs e2fsck)");
  // What this library knows how to leave alone. A feature outside these
  // could change what a block means.
  constexpr uint32_t kKnownIncompat =
      EXT2_FEATURE_INCOMPAT_FILETYPE | EXT3_FEATURE_INCOMPAT_RECOVER |
      EXT2_FEATURE_INCOMPAT_META_BG | EXT3_FEATURE_INCOMPAT_EXTENTS |
      EXT4_FEATURE_INCOMPAT_64BIT | EXT4_FEATURE_INCOMPAT_MMP |
      EXT4_FEATURE_INCOMPAT_FLEX_BG | EXT4_FEATURE_INCOMPAT_EA_INODE |
      EXT4_FEATURE_INCOMPAT_CSUM_SEED | EXT4_FEATURE_INCOMPAT_LARGEDIR |
      EXT4_FEATURE_INCOMPAT_INLINE_DATA | EXT4_FEATURE_INCOMPAT_ENCRYPT |
      EXT4_FEATURE_INCOMPAT_CASEFOLD;
  constexpr uint32_t kKnownRoCompat =
      EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER | EXT2_FEATURE_RO_COMPAT_LARGE_FILE |
      EXT4_FEATURE_RO_COMPAT_HUGE_FILE | EXT4_FEATURE_RO_COMPAT_GDT_CSUM |
      EXT4_FEATURE_RO_COMPAT_DIR_NLINK | EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE |
      EXT4_FEATURE_RO_COMPAT_QUOTA | EXT4_FEATURE_RO_COMPAT_BIGALLOC |
      EXT4_FEATURE_RO_COMPAT_METADATA_CSUM | EXT4_FEATURE_RO_COMPAT_PROJECT |
      EXT4_FEATURE_RO_COMPAT_VERITY | EXT4_FEATURE_RO_COMPAT_ORPHAN_PRESENT;
  if (sb->s_feature_incompat & ~kKnownIncompat) {
    const uint32_t bits = sb->s_feature_incompat & ~kKnownIncompat;
    return refuse(absl::StrFormat("unknown incompat features 0x%x (%s)", bits,
                                  FeatureNames(E2P_FEATURE_INCOMPAT, bits)));
  }
  if (sb->s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_SHARED_BLOCKS)
    return refuse("the shared_blocks feature is set: a block may belong to several files");
  if (sb->s_feature_ro_compat & EXT4_FEATURE_RO_COMPAT_READONLY)
    return refuse("the read-only feature is set");
  if (sb->s_feature_ro_compat & ~kKnownRoCompat) {
    const uint32_t bits = sb->s_feature_ro_compat & ~kKnownRoCompat;
    return refuse(absl::StrFormat("unknown ro_compat features 0x%x (%s)", bits,
                                  FeatureNames(E2P_FEATURE_RO_INCOMPAT, bits)));
  }
  if (ext2fs_has_feature_mmp(sb)) {
    if (sb->s_mmp_block < sb->s_first_data_block || sb->s_mmp_block >= blocks_count_)
      return refuse("the MMP block lies outside the filesystem");
    std::vector<unsigned char> buf(fs_->blocksize);
    errcode_t err = io_channel_read_blk64(fs_->io, sb->s_mmp_block, 1, buf.data());
    if (err != 0) return Ext2fsError(err, EXT4DIO_E_CORRUPT_FS, "reading the MMP block");
    mmp_struct mmp;
    std::memcpy(&mmp, buf.data(), sizeof mmp);
    if (ext2fs_le32_to_cpu(mmp.mmp_magic) != EXT4_MMP_MAGIC)
      return refuse("the MMP block has a bad magic number");
    const uint32_t seq = ext2fs_le32_to_cpu(mmp.mmp_seq);
    if (seq != EXT4_MMP_SEQ_CLEAN) {
      char node[sizeof mmp.mmp_nodename + 1] = {0};
      std::memcpy(node, mmp.mmp_nodename, sizeof mmp.mmp_nodename);
      return LibError(EXT4DIO_E_IN_USE,
                      absl::StrFormat("%s: multiple-mount protection shows it in use "
                                      "(sequence 0x%x, node '%s', device '%s')",
                                      source_, seq, node,
                                      std::string(reinterpret_cast<char*>(mmp.mmp_bdevname),
                                                  strnlen(reinterpret_cast<char*>(mmp.mmp_bdevname),
                                                          sizeof mmp.mmp_bdevname))));
    }
  }
  return absl::OkStatus();
}

absl::Status Ext4Reader::CheckOwnership(const FileLayout& layout) {
  MutexLock lock(&mu_);
  return CheckBlockOwnership(fs_, source_, layout);
}

absl::Status Ext4Reader::ValidateExtents(const std::vector<Extent>& extents,
                                         const std::vector<uint64_t>& map_blocks) {
  MutexLock lock(&mu_);
  // Status has no .status(): wrap it for Retrying.
  // Descriptors read earlier can only make validation fail, never pass
  // wrongly (bitmaps themselves are read afresh): refresh only on failure.
  absl::StatusOr<bool> r = Retrying<absl::StatusOr<bool>>(
      [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::StatusOr<bool> {
        if (absl::Status s = Validate(extents, map_blocks); !s.ok()) return s;
        return true;
      },
      /*refresh_first=*/false);
  return r.status();
}

absl::StatusOr<std::vector<MetadataRange>> Ext4Reader::Metadata() {
  MutexLock lock(&mu_);
  if (absl::Status s = BuildMetadata(); !s.ok()) return s;
  return metadata_;
}

absl::Status Ext4Reader::BuildMetadata() {
  if (metadata_built_) return absl::OkStatus();
  ext2_super_block* sb = fs_->super;
  std::vector<MetadataRange> ranges;
  auto add = [&](uint64_t start, uint64_t count, std::string what) {
    if (count > 0) ranges.push_back({start, start + count, std::move(what)});
  };
  // Block 0 up to and including the primary superblock (boot block too).
  add(0, sb->s_first_data_block + 1, "the primary superblock");
  const uint64_t old_desc_blocks =
      ext2fs_has_feature_meta_bg(sb)
          ? sb->s_first_meta_bg
          : fs_->desc_blocks + sb->s_reserved_gdt_blocks;
  for (dgrp_t g = 0; g < fs_->group_desc_count; ++g) {
    blk64_t super = 0, old_desc = 0, new_desc = 0;
    blk_t used = 0;
    ext2fs_super_and_bgd_loc2(fs_, g, &super, &old_desc, &new_desc, &used);
    if (super) add(super, 1, absl::StrFormat("the superblock backup of group %d", g));
    if (old_desc)
      add(old_desc, old_desc_blocks,
          absl::StrFormat("the group descriptors / reserved GDT blocks of group %d", g));
    if (new_desc) add(new_desc, 1, absl::StrFormat("the meta_bg group descriptors of group %d", g));
    add(ext2fs_block_bitmap_loc(fs_, g), 1, absl::StrFormat("the block bitmap of group %d", g));
    add(ext2fs_inode_bitmap_loc(fs_, g), 1, absl::StrFormat("the inode bitmap of group %d", g));
    add(ext2fs_inode_table_loc(fs_, g), fs_->inode_blocks_per_group,
        absl::StrFormat("the inode table of group %d", g));
  }
  if (ext2fs_has_feature_mmp(sb) && sb->s_mmp_block)
    add(sb->s_mmp_block, 1, "the MMP block");

  // Special files whose blocks are metadata as far as we are concerned.
  struct Special { uint64_t ino; const char* what; };
  std::vector<Special> specials;
  if (ext2fs_has_feature_journal(sb) && sb->s_journal_inum)
    specials.push_back({sb->s_journal_inum, "the journal"});
  if (ext2fs_has_feature_resize_inode(sb))
    specials.push_back({EXT2_RESIZE_INO, "the resize inode"});
  // The blocks the bad-blocks inode lists are unusable, and a corrupt one
  // may list live metadata (an inode bitmap): no file data there.
  specials.push_back({EXT2_BAD_INO, "a block listed by the bad-blocks inode"});
  for (uint64_t q : {uint64_t{sb->s_usr_quota_inum}, uint64_t{sb->s_grp_quota_inum},
                     uint64_t{sb->s_prj_quota_inum}}) {
    if (q) specials.push_back({q, "a quota file"});
  }
  if (sb->s_orphan_file_inum)
    specials.push_back({sb->s_orphan_file_inum, "the orphan file"});
  for (const Special& sp : specials) {
    if (sp.ino > sb->s_inodes_count) {
      return LibError(EXT4DIO_E_CORRUPT_FS,
                      absl::StrFormat("%s: %s has inode %d, past the inode table",
                                      source_, sp.what, sp.ino));
    }
    std::vector<std::pair<uint64_t, uint64_t>> runs;
    BlockCollector c{&runs, blocks_count_};
    errcode_t err = ext2fs_block_iterate3(fs_, static_cast<ext2_ino_t>(sp.ino),
                                          BLOCK_FLAG_READ_ONLY, nullptr,
                                          CollectBlock, &c);
    if (err != 0 || c.over_limit) {
      return Ext2fsError(err ? err : EXT2_ET_BAD_BLOCK_NUM, EXT4DIO_E_CORRUPT_FS,
                         absl::StrFormat("%s: reading the blocks of %s (inode %d)",
                                         source_, sp.what, sp.ino));
    }
    for (auto [s, e] : runs) add(s, e - s, sp.what);
  }

  std::sort(ranges.begin(), ranges.end(),
            [](const MetadataRange& a, const MetadataRange& b) {
              return a.start < b.start;
            });
  metadata_.clear();
  for (MetadataRange& r : ranges) {
    if (!metadata_.empty() && r.start <= metadata_.back().end &&
        r.what == metadata_.back().what) {
      metadata_.back().end = std::max(metadata_.back().end, r.end);
    } else if (!metadata_.empty() && r.start < metadata_.back().end) {
      // Overlapping ranges of different kinds: keep them apart only where
      // they do not overlap, the first one's name wins the overlap.
      if (r.end > metadata_.back().end) {
        r.start = metadata_.back().end;
        metadata_.push_back(std::move(r));
      }
    } else {
      metadata_.push_back(std::move(r));
    }
  }
  metadata_built_ = true;
  return absl::OkStatus();
}

absl::Status Ext4Reader::Validate(const std::vector<Extent>& extents,
                                  const std::vector<uint64_t>& map_blocks) {
  ext2_super_block* sb = fs_->super;
  const uint64_t first = sb->s_first_data_block;
  const uint64_t device_blocks =
      (source_size_ - options_.offset) / fs_->blocksize;
  const uint64_t end_limit = std::min(blocks_count_, device_blocks);

  // Names are made only for a message: a re-map validates thousands.
  struct Piece {
    uint64_t start, end;
    size_t index;  // into extents, or extents.size() + into map_blocks
  };
  auto name_of = [&](const Piece& p) -> std::string {
    if (p.index >= extents.size())
      return absl::StrFormat("index block %d", map_blocks[p.index - extents.size()]);
    const Extent& x = extents[p.index];
    return absl::StrFormat("extent %d (logical %d, %d blocks at physical %d%s)", p.index,
                           x.logical, x.length, x.physical, x.unwritten ? ", unwritten" : "");
  };
  std::vector<Piece> pieces;
  pieces.reserve(extents.size() + map_blocks.size());
  for (size_t i = 0; i < extents.size(); ++i) {
    const Extent& x = extents[i];
    pieces.push_back({x.physical, x.physical + x.length, i});
    if (x.physical < first || x.physical >= end_limit ||
        x.length > end_limit - x.physical) {
      return CorruptMap(absl::StrFormat(
          "%s lies outside the filesystem (blocks %d..%d)", name_of(pieces.back()), first,
          end_limit - 1));
    }
  }
  for (size_t i = 0; i < map_blocks.size(); ++i) {
    const uint64_t b = map_blocks[i];
    pieces.push_back({b, b + 1, extents.size() + i});
    if (b < first || b >= end_limit) {
      return CorruptMap(absl::StrFormat(
          "%s lies outside the filesystem (blocks %d..%d)", name_of(pieces.back()), first,
          end_limit - 1));
    }
  }

  std::sort(pieces.begin(), pieces.end(),
            [](const Piece& a, const Piece& b) { return a.start < b.start; });
  for (size_t i = 1; i < pieces.size(); ++i) {
    if (pieces[i].start < pieces[i - 1].end) {
      return CorruptMap(absl::StrFormat("%s and %s share physical block %d",
                                        name_of(pieces[i - 1]), name_of(pieces[i]),
                                        pieces[i].start));
    }
  }

  if (absl::Status s = BuildMetadata(); !s.ok()) return s;
  for (const Piece& p : pieces) {
    auto it = std::upper_bound(
        metadata_.begin(), metadata_.end(), p.start,
        [](uint64_t v, const MetadataRange& r) { return v < r.start; });
    // The range starting at or before p.start, and the one after it.
    if (it != metadata_.begin() && std::prev(it)->end > p.start) --it;
    if (it != metadata_.end() && it->start < p.end) {
      return CorruptMap(absl::StrFormat(
          "%s overlaps %s (blocks %d..%d)", name_of(p), it->what, it->start,
          it->end - 1));
    }
  }

  // Every block must be in use in its group's bitmap. Only the bitmaps of
  // the groups the file touches are read.
  const uint32_t cluster_bits = static_cast<uint32_t>(fs_->cluster_ratio_bits);
  const size_t bitmap_bytes = EXT2_CLUSTERS_PER_GROUP(sb) / 8;
  std::map<dgrp_t, std::vector<unsigned char>> bitmaps;
  std::set<dgrp_t> refreshed;  // descriptor blocks read afresh (live)
  std::vector<unsigned char> block(fs_->blocksize);
  for (const Piece& p : pieces) {
    uint64_t b = p.start;
    while (b < p.end) {
      const dgrp_t g = ext2fs_group_of_blk2(fs_, b);
      const uint64_t gfirst = ext2fs_group_first_block2(fs_, g);
      const uint64_t glast = ext2fs_group_last_block2(fs_, g);
      const uint64_t stop = std::min<uint64_t>(p.end, glast + 1);
      if (options_.live && !(fs_->flags & EXT2_FLAG_IMAGE_FILE)) {
        // The kernel keeps this group's descriptor (flags, bitmap checksum)
        // current in the device's page cache: read its block afresh.
        const dgrp_t per_block = EXT2_DESC_PER_BLOCK(sb);
        const dgrp_t index = g / per_block;
        if (refreshed.insert(index).second) {
          const blk64_t where = ext2fs_descriptor_block_loc2(fs_, first, index);
          errcode_t err = io_channel_read_blk64(
              fs_->io, where, 1,
              reinterpret_cast<char*>(fs_->group_desc) + static_cast<size_t>(index) * fs_->blocksize);
          if (err != 0) {
            return Ext2fsError(err, EXT4DIO_E_CORRUPT_FS,
                               absl::StrFormat("re-reading the descriptor of group %d", g));
          }
        }
      }
      if (ext2fs_has_group_desc_csum(fs_) &&
          (ext2fs_bg_flags(fs_, g) & EXT2_BG_BLOCK_UNINIT)) {
        return CorruptMap(absl::StrFormat(
            "block %d of %s is free: group %d has no blocks in use "
            "(BLOCK_UNINIT)", b, name_of(p), g));
      }
      auto [it, inserted] = bitmaps.try_emplace(g);
      if (inserted) {
        errcode_t err = io_channel_read_blk64(
            fs_->io, ext2fs_block_bitmap_loc(fs_, g), 1, block.data());
        if (err != 0) {
          return Ext2fsError(err, EXT4DIO_E_CORRUPT_FS,
                             absl::StrFormat("reading the block bitmap of group %d", g));
        }
        if (ext2fs_has_feature_metadata_csum(sb) &&
            !ext2fs_block_bitmap_csum_verify(
                fs_, g, reinterpret_cast<char*>(block.data()),
                static_cast<int>(bitmap_bytes))) {
          bitmaps.erase(it);
          return ChecksumError(absl::StrFormat(
              "the block bitmap of group %d fails its checksum", g));
        }
        it->second.assign(block.begin(), block.end());
      }
      const std::vector<unsigned char>& bits = it->second;
      for (uint64_t blk = b; blk < stop;) {
        const uint64_t bit = (blk - gfirst) >> cluster_bits;
        if (bit / 8 >= bits.size() || !(bits[bit / 8] & (1u << (bit % 8)))) {
          return CorruptMap(absl::StrFormat(
              "block %d of %s is free in the block bitmap of group %d", blk,
              name_of(p), g));
        }
        // Next cluster (or block when there is no bigalloc).
        blk = gfirst + ((bit + 1) << cluster_bits);
      }
      b = stop;
    }
  }
  return absl::OkStatus();
}

}  // namespace ext4dio
