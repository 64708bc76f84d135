#include "ownership.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

#include <ext2fs/ext2fs.h>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "errors.h"
#include "ranges.h"

namespace ext4dio {
namespace {

constexpr uint64_t kNoHit = UINT64_MAX;

// The target's blocks as sorted, merged half-open cluster ranges. Two inodes
// may not share a cluster (bigalloc allocates whole clusters), so clusters
// are what is compared.
class ClusterSet {
 public:
  explicit ClusterSet(uint32_t cluster_bits) : bits_(cluster_bits) {}

  void AddBlocks(uint64_t start, uint64_t count) {
    if (count == 0) return;
    ranges_.emplace_back(start >> bits_, ((start + count - 1) >> bits_) + 1);
  }

  void Finish() { SortAndMerge(ranges_); }

  // The first block of [start, start + count) whose cluster is in the set,
  // or kNoHit.
  uint64_t FirstHit(uint64_t start, uint64_t count) const {
    if (count == 0 || ranges_.empty()) return kNoHit;
    count = std::min(count, UINT64_MAX - start);
    if (count == 0) return kNoHit;
    const uint64_t cs = start >> bits_;
    const uint64_t ce = ((start + count - 1) >> bits_) + 1;
    if (ce <= ranges_.front().first || cs >= ranges_.back().second) return kNoHit;
    auto it = FirstEndingAfter(ranges_, cs);
    if (it == ranges_.end() || it->first >= ce) return kNoHit;
    return std::max(start, std::max(cs, it->first) << bits_);
  }

 private:
  const uint32_t bits_;
  RangeList ranges_;  // [first, end) clusters
};

enum class Kind { kData, kBadBlock, kExtentBlock, kIndirect, kXattr };

uint16_t Le16(const unsigned char* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return ext2fs_le16_to_cpu(v);
}
uint32_t Le32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return ext2fs_le32_to_cpu(v);
}

class Scanner {
 public:
  Scanner(ext2_filsys fs, const std::string& source, const FileLayout& target,
          const ClusterSet& set)
      : fs_(fs),
        source_(source),
        target_(target),
        set_(set),
        first_(fs->super->s_first_data_block),
        blocks_count_(ext2fs_blocks_count(fs->super)),
        budget_(2 * blocks_count_ + fs->super->s_inodes_count),
        levels_(kMaxLevels, std::vector<unsigned char>(fs->blocksize)) {}

  absl::Status Run();

 private:
  static constexpr int kMaxLevels = Ext4Reader::kMaxDepth + 1;

  absl::Status Claim(uint64_t start, uint64_t count, Kind kind, uint64_t logical);
  absl::Status WalkExtents(const unsigned char* node, size_t bytes, int want_depth, int level);
  absl::Status WalkIndirect(uint64_t block, int level, uint64_t logical_base, Kind data_kind);
  absl::Status WalkInode(const ext2_inode& inode);
  bool InUse(uint64_t ino, const ext2_inode& inode);
  bool InRange(uint64_t block) const { return block >= first_ && block < blocks_count_; }

  std::string Other() const {
    return ino_ == EXT2_BAD_INO ? std::string("the bad-blocks inode (inode 1)")
                                : absl::StrFormat("inode %d", ino_);
  }
  absl::Status Unreadable(absl::string_view why) const {
    return LibError(
        EXT4DIO_E_CORRUPT_FS,
        absl::StrFormat("%s: inode %d: cannot check that no other file claims its blocks: "
                        "%s %s; run e2fsck -f (or skip the ownership check, at your risk)",
                        source_, target_.inode, Other(), why));
  }

  ext2_filsys fs_;
  const std::string& source_;
  const FileLayout& target_;
  const ClusterSet& set_;
  const uint64_t first_, blocks_count_;
  uint64_t budget_;  // blocks all inodes together may still claim
  std::vector<std::vector<unsigned char>> levels_;  // one block per tree level
  uint64_t ino_ = 0;                                // the inode being walked
  // The inode bitmap of `bitmap_group_`; all ones when it cannot be read.
  std::vector<unsigned char> bitmap_;
  int64_t bitmap_group_ = -1;
};

absl::Status Scanner::Claim(uint64_t start, uint64_t count, Kind kind, uint64_t logical) {
  // Every entry costs at least one unit, so a hostile tree (a DAG of index
  // blocks, zero-length extents) cannot make the walk run away.
  const uint64_t cost = std::max<uint64_t>(count, 1);
  if (cost > budget_) {
    return Unreadable(absl::StrFormat(
        "takes the inodes' claims past %d blocks (the filesystem has %d): block maps that "
        "share or repeat blocks", 2 * blocks_count_ + fs_->super->s_inodes_count,
        blocks_count_));
  }
  budget_ -= cost;
  const uint64_t hit = set_.FirstHit(start, count);
  if (hit == kNoHit) return absl::OkStatus();
  std::string as;
  switch (kind) {
    case Kind::kData:
      as = absl::StrFormat("as its data at logical block %d", logical + (hit - start));
      break;
    case Kind::kBadBlock: as = "as a bad block"; break;
    case Kind::kExtentBlock: as = "as one of its extent tree blocks"; break;
    case Kind::kIndirect: as = "as one of its indirect blocks"; break;
    case Kind::kXattr: as = "as its extended-attribute block"; break;
  }
  if (ino_ == target_.inode) {
    return LibError(EXT4DIO_E_CORRUPT_MAP,
                    absl::StrFormat("%s: inode %d: block %d is both the file's data and %s "
                                    "(multiply-claimed); run e2fsck -f",
                                    source_, target_.inode, hit,
                                    "its own extended-attribute block"));
  }
  return LibError(EXT4DIO_E_CORRUPT_MAP,
                  absl::StrFormat("%s: inode %d: block %d of the file is also claimed by %s "
                                  "(%s): writing would change that file too (e2fsck: "
                                  "multiply-claimed blocks; run e2fsck -f)",
                                  source_, target_.inode, hit, Other(), as));
}

absl::Status Scanner::WalkExtents(const unsigned char* node, size_t bytes, int want_depth,
                                  int level) {
  constexpr size_t kEntry = 12;  // header, extents and index entries alike
  if (Le16(node) != EXT3_EXT_MAGIC) {
    return Unreadable(level == 0 ? "has an extent tree root without an extent header"
                                 : "has an extent tree block without an extent header");
  }
  const uint16_t entries = Le16(node + 2);
  const uint16_t depth = Le16(node + 6);
  if (entries > bytes / kEntry - 1) {
    return Unreadable(absl::StrFormat("has an extent tree node of %d entries, more than fit",
                                      entries));
  }
  if ((want_depth >= 0 && depth != want_depth) || depth > Ext4Reader::kMaxDepth) {
    return Unreadable(absl::StrFormat("has an extent tree node of depth %d at level %d",
                                      depth, level));
  }
  for (uint16_t i = 0; i < entries; ++i) {
    const unsigned char* e = node + kEntry * (i + 1);
    const uint32_t lblk = Le32(e);
    if (depth == 0) {
      uint32_t len = Le16(e + 4);
      if (len > EXT_INIT_MAX_LEN) len -= EXT_INIT_MAX_LEN;  // unwritten
      const uint64_t pblk = (uint64_t{Le16(e + 6)} << 32) | Le32(e + 8);
      if (absl::Status s = Claim(pblk, len, Kind::kData, lblk); !s.ok()) return s;
    } else {
      const uint64_t child = (uint64_t{Le16(e + 8)} << 32) | Le32(e + 4);
      if (absl::Status s = Claim(child, 1, Kind::kExtentBlock, 0); !s.ok()) return s;
      // Outside the filesystem nothing can be read (the kernel refuses such
      // a subtree too): it claims nothing of the target's.
      if (!InRange(child)) continue;
      std::vector<unsigned char>& buf = levels_[level + 1];
      errcode_t err = io_channel_read_blk64(fs_->io, child, 1, buf.data());
      if (err != 0) {
        return Unreadable(absl::StrFormat("has extent tree block %d that cannot be read (%s)",
                                          child, Ext2fsMessage(err)));
      }
      if (absl::Status s = WalkExtents(buf.data(), buf.size(), depth - 1, level + 1); !s.ok())
        return s;
    }
  }
  return absl::OkStatus();
}

absl::Status Scanner::WalkIndirect(uint64_t block, int level, uint64_t logical_base,
                                   Kind data_kind) {
  if (absl::Status s = Claim(block, 1, Kind::kIndirect, 0); !s.ok()) return s;
  if (!InRange(block)) return absl::OkStatus();  // unreadable: claims nothing here
  std::vector<unsigned char>& buf = levels_[level];
  errcode_t err = io_channel_read_blk64(fs_->io, block, 1, buf.data());
  if (err != 0) {
    return Unreadable(absl::StrFormat("has indirect block %d that cannot be read (%s)", block,
                                      Ext2fsMessage(err)));
  }
  const uint64_t per_block = fs_->blocksize / 4;
  uint64_t span = 1;  // logical blocks below one entry
  for (int l = 1; l < level; ++l) span *= per_block;
  // Deeper levels read into their own buffers: this one stays as read.
  for (uint64_t i = 0; i < per_block; ++i) {
    const uint32_t entry = Le32(levels_[level].data() + 4 * i);
    if (entry == 0) continue;
    absl::Status s = level == 1
        ? Claim(entry, 1, data_kind, logical_base + i)
        : WalkIndirect(entry, level - 1, logical_base + i * span, data_kind);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status Scanner::WalkInode(const ext2_inode& inode) {
  if (const blk64_t acl = ext2fs_file_acl_block(fs_, const_cast<ext2_inode*>(&inode)); acl) {
    if (absl::Status s = Claim(acl, 1, Kind::kXattr, 0); !s.ok()) return s;
  }
  // The target's own map was read and validated by ReadFile (its blocks are
  // claimed once within it); only its xattr block is compared above.
  if (ino_ == target_.inode) return absl::OkStatus();
  const bool bad_blocks = ino_ == EXT2_BAD_INO;
  // Fast symlinks, devices, inline data: i_block holds no block numbers.
  if (!bad_blocks && !ext2fs_inode_has_valid_blocks2(fs_, const_cast<ext2_inode*>(&inode)))
    return absl::OkStatus();
  if (!bad_blocks && (inode.i_flags & EXT4_EXTENTS_FL)) {
    unsigned char root[sizeof inode.i_block];
    std::memcpy(root, inode.i_block, sizeof root);
    return WalkExtents(root, sizeof root, -1, 0);
  }
  const Kind data = bad_blocks ? Kind::kBadBlock : Kind::kData;
  for (uint64_t i = 0; i < EXT2_NDIR_BLOCKS; ++i) {
    if (inode.i_block[i] == 0) continue;
    if (absl::Status s = Claim(inode.i_block[i], 1, data, i); !s.ok()) return s;
  }
  const uint64_t per_block = fs_->blocksize / 4;
  uint64_t base = EXT2_NDIR_BLOCKS;
  uint64_t span = per_block;
  for (int level = 1; level <= 3; ++level) {
    const uint32_t b = inode.i_block[EXT2_NDIR_BLOCKS + level - 1];
    if (b != 0) {
      if (absl::Status s = WalkIndirect(b, level, base, data); !s.ok()) return s;
    }
    base += span;
    span *= per_block;
  }
  return absl::OkStatus();
}

bool Scanner::InUse(uint64_t ino, const ext2_inode& inode) {
  if (ino == EXT2_BAD_INO) return true;
  // e2fsck counts an inode with links as in use whatever the bitmap says, and
  // the kernel may still use one in the bitmap without links (an orphan):
  // either is enough.
  if (inode.i_links_count != 0) return true;
  const uint32_t per_group = fs_->super->s_inodes_per_group;
  const int64_t group = static_cast<int64_t>((ino - 1) / per_group);
  if (group != bitmap_group_) {
    bitmap_group_ = group;
    bitmap_.assign(fs_->blocksize, 0xff);
    if (ext2fs_has_group_desc_csum(fs_) &&
        (ext2fs_bg_flags(fs_, static_cast<dgrp_t>(group)) & EXT2_BG_INODE_UNINIT)) {
      bitmap_.assign(fs_->blocksize, 0);
    } else if (io_channel_read_blk64(fs_->io,
                                     ext2fs_inode_bitmap_loc(fs_, static_cast<dgrp_t>(group)), 1,
                                     bitmap_.data()) != 0) {
      bitmap_.assign(fs_->blocksize, 0xff);  // unknown: count every inode
    }
  }
  const uint64_t bit = (ino - 1) % per_group;
  return bit / 8 >= bitmap_.size() || (bitmap_[bit / 8] & (1u << (bit % 8)));
}

absl::Status Scanner::Run() {
  ext2_inode_scan scan = nullptr;
  errcode_t err = ext2fs_open_inode_scan(fs_, 64, &scan);
  if (err != 0) return Ext2fsError(err, EXT4DIO_E_CORRUPT_FS, "opening an inode scan");
  absl::Cleanup close_scan = [scan] { ext2fs_close_inode_scan(scan); };
  // Lazy skipping of INODE_UNINIT groups and of bg_itable_unused is on by
  // itself when the descriptors carry checksums; groups without an inode
  // table are skipped instead of ending the scan.
  ext2fs_inode_scan_flags(scan, EXT2_SF_SKIP_MISSING_ITABLE, 0);
  const int inode_size = EXT2_INODE_SIZE(fs_->super);
  std::vector<char> buf(std::max<size_t>(inode_size, sizeof(ext2_inode_large)));
  auto* inode = reinterpret_cast<ext2_inode*>(buf.data());
  for (;;) {
    ext2_ino_t ino = 0;
    err = ext2fs_get_next_inode_full(scan, &ino, inode, inode_size);
    // A failed checksum still leaves what the kernel or e2fsck could use.
    if (err == EXT2_ET_INODE_CSUM_INVALID || err == EXT2_ET_INODE_IS_GARBAGE) err = 0;
    if (err != 0) {
      return Ext2fsError(err, EXT4DIO_E_CORRUPT_FS,
                         absl::StrFormat("%s: inode %d: scanning the inode tables for other "
                                         "claims on its blocks (after inode %d)",
                                         source_, target_.inode, ino_));
    }
    if (ino == 0) break;
    ino_ = ino;
    if (!InUse(ino, *inode)) continue;
    if (absl::Status s = WalkInode(*inode); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// bigalloc: a file's blocks are claimed a cluster at a time, so within the
// file each block keeps its offset inside its cluster and each logical
// cluster maps to one physical cluster and back (e2fsck: "violates cluster
// allocation rules", reported in pass 1B as multiply-claimed). Otherwise two
// logical blocks of the file may share a cluster that e2fsck then splits.
absl::Status CheckClusterRules(const std::string& source, const FileLayout& target,
                               uint32_t cluster_bits) {
  if (cluster_bits == 0) return absl::OkStatus();
  const uint64_t mask = (uint64_t{1} << cluster_bits) - 1;
  auto broken = [&](uint64_t logical, uint64_t physical, absl::string_view why) {
    return LibError(EXT4DIO_E_CORRUPT_MAP,
                    absl::StrFormat("%s: inode %d: logical block %d (physical block %d) "
                                    "violates bigalloc's cluster allocation rules: %s "
                                    "(e2fsck: multiply-claimed blocks; run e2fsck -f)",
                                    source, target.inode, logical, physical, why));
  };
  // Extents overlap neither logically nor physically, so two of them can
  // only meet in their first or last cluster: those are all that is kept.
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> logical_to_physical;  // lc -> pc, block
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> physical_to_logical;  // pc -> lc, block
  for (const Extent& e : target.extents) {
    if ((e.logical & mask) != (e.physical & mask))
      return broken(e.logical, e.physical, "its offset inside the cluster differs");
    const uint64_t last = e.length - 1;
    for (uint64_t off : {uint64_t{0}, last}) {
      const uint64_t lc = (e.logical + off) >> cluster_bits;
      const uint64_t pc = (e.physical + off) >> cluster_bits;
      auto [l, new_l] = logical_to_physical.try_emplace(lc, pc, e.physical + off);
      if (!new_l && l->second.first != pc) {
        return broken(e.logical + off, e.physical + off,
                      absl::StrFormat("its logical cluster is also at physical block %d, in "
                                      "another cluster", l->second.second));
      }
      auto [p, new_p] = physical_to_logical.try_emplace(pc, lc, e.logical + off);
      if (!new_p && p->second.first != lc) {
        return broken(e.logical + off, e.physical + off,
                      absl::StrFormat("its cluster also holds logical block %d, of another "
                                      "logical cluster", p->second.second));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckBlockOwnership(ext2_filsys fs, const std::string& source,
                                 const FileLayout& target) {
  ClusterSet set(static_cast<uint32_t>(fs->cluster_ratio_bits));
  for (const Extent& e : target.extents) set.AddBlocks(e.physical, e.length);
  for (uint64_t b : target.map_blocks) set.AddBlocks(b, 1);
  set.Finish();
  if (absl::Status s = CheckClusterRules(source, target, fs->cluster_ratio_bits); !s.ok())
    return s;
  Scanner scanner(fs, source, target, set);
  return scanner.Run();
}

}  // namespace ext4dio
