// Block ownership: before image mode writes a file, no other inode may claim
// any of its blocks. A filesystem where two inodes list the same block
// (e2fsck pass 1B, "multiply-claimed blocks") passes every per-file check of
// Ext4Reader::ReadFile, yet a write there changes the other file, or its
// extent tree, indirect or extended-attribute block.
//
// The check is an inode scan restricted to the target's clusters: every
// in-use inode's claims (data, extent-tree and indirect blocks, xattr block)
// are tested for intersection with the target's sorted cluster ranges.
// Unused inode-table areas are skipped the way libext2fs's lazy scan does
// (INODE_UNINIT groups, bg_itable_unused, missing inode tables). The
// bad-blocks inode (1) counts as claiming the blocks it lists.
//
// Thread-safety: the caller holds whatever guards `fs` (Ext4Reader's mutex).
#ifndef EXT4DIO_LIB_OWNERSHIP_H_
#define EXT4DIO_LIB_OWNERSHIP_H_

#include <string>

#include "absl/status/status.h"
#include "ext4_reader.h"

struct struct_ext2_filsys;

namespace ext4dio {

// OK when no inode but `target.inode` claims a cluster of the target's
// extents or index blocks, the target's own xattr block is none of them,
// and (bigalloc) the target keeps the cluster rules: each block at its
// offset inside its cluster, one physical cluster per logical cluster and
// back. Otherwise EXT4DIO_E_CORRUPT_MAP naming the block and the other
// inode, or EXT4DIO_E_CORRUPT_FS when an inode's blocks cannot be read (then
// nobody can tell whether it claims the target's). The walk is bounded: all
// inodes together may claim at most 2 * blocks_count + inodes_count blocks,
// more than any consistent filesystem does.
absl::Status CheckBlockOwnership(struct_ext2_filsys* fs, const std::string& source,
                                 const FileLayout& target);

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_OWNERSHIP_H_
