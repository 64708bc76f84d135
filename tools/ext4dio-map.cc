// ext4dio-map: print files' ext4 extent maps (filefrag -v style, or JSON).
//
//   ext4dio-map [--image=IMG [--image-offset=BYTES|--partition=N]] [--json]
//               TARGET...|--inode=N
//
// Image mode reads the filesystem in IMG with libext2fs; mounted mode reads
// the file's block device and cross-checks the tree with FIEMAP (exit 1 on a
// disagreement, naming the first difference).
//
// Like filefrag, every TARGET is mapped in turn (a failure is reported and
// the rest still printed; the exit status is 1 if any failed), "N extents
// found" counts fragments (physically contiguous runs of leaf extents, as
// filefrag counts them) and the flags are filefrag's: "last" on the last
// extent, "eof" on every extent reaching the end of the file (i_size).
// --json prints one object per line per TARGET (JSON Lines), with both
// "fragments" and "leaf_extents".
#include <cinttypes>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "ext4dio/ext4dio.hpp"

namespace {

const char* SourceName(uint32_t source) {
  switch (source) {
    case EXT4DIO_SOURCE_IMAGE: return "image";
    case EXT4DIO_SOURCE_DEVICE: return "device";
    case EXT4DIO_SOURCE_FIEMAP: return "fiemap";
  }
  return "unknown";
}

// filefrag's count, and its "expected" column: a leaf extent starts a new
// fragment unless it starts where the previous one ended physically, or
// where it would with the logical gap between them (a hole mapped sparse);
// the first extent of a file is a fragment of its own. `expected[i]` is the
// physical block filefrag prints for extent i (0: blank).
size_t Fragments(const std::vector<ext4dio_extent>& extents, std::vector<uint64_t>* expected) {
  size_t fragments = 0;
  uint64_t last_logical = 0, last_physical = 0, last_blocks = 0;
  expected->assign(extents.size(), 0);
  for (size_t i = 0; i < extents.size(); ++i) {
    const ext4dio_extent& e = extents[i];
    const uint64_t dense = last_physical + last_blocks;
    const uint64_t sparse = last_physical + e.logical_block - last_logical;
    if (e.logical_block != 0 && e.physical_block != sparse && e.physical_block != dense) {
      ++fragments;
      (*expected)[i] = sparse;
    } else if (fragments == 0) {
      fragments = 1;
    }
    last_logical = e.logical_block;
    last_physical = e.physical_block;
    last_blocks = e.blocks;
  }
  return fragments;
}

void PrintTable(const std::string& name, const ext4dio::FileMap& map) {
  const ext4dio_map_info& info = map.info();
  const uint64_t bs = info.block_size;
  std::printf("File size of %s is %" PRIu64 " (%" PRIu64 " blocks of %" PRIu64
              " bytes)\n",
              name.c_str(), info.size, (info.size + bs - 1) / bs, bs);
  std::printf("Inode %" PRIu64 " on %s (%s, %s)\n", info.inode, info.device,
              SourceName(info.source),
              info.extent_tree ? "extent tree" : "block map");
  std::printf(" ext:     logical_offset:        physical_offset: length:   "
              "expected: flags:\n");
  const auto extents = map.Extents();
  std::vector<uint64_t> expected;
  const size_t fragments = Fragments(extents, &expected);
  for (size_t i = 0; i < extents.size(); ++i) {
    const ext4dio_extent& e = extents[i];
    std::string flags;
    auto add = [&flags](const char* f) {
      if (!flags.empty()) flags += ",";
      flags += f;
    };
    // filefrag's order: last, unwritten, eof.
    if (i + 1 == extents.size()) add("last");
    if (e.flags & EXT4DIO_EXTENT_UNWRITTEN) add("unwritten");
    if ((e.logical_block + e.blocks) * bs >= info.size) add("eof");
    const std::string exp = expected[i] ? std::to_string(expected[i]) + ":" : "";
    // filefrag's columns (for files and filesystems of up to 10^8 and
    // 10^10 blocks; wider numbers push the rest right). Like filefrag, no
    // space after the last column when there are no flags.
    std::printf("%4zu: %8" PRIu64 "..%8" PRIu64 ": %10" PRIu64 "..%10" PRIu64
                ": %6" PRIu64 ": %11s%s%s\n",
                i, e.logical_block, e.logical_block + e.blocks - 1,
                e.physical_block, e.physical_block + e.blocks - 1, e.blocks,
                exp.c_str(), flags.empty() ? "" : " ", flags.c_str());
  }
  std::printf("%s: %zu extent%s found\n", name.c_str(), fragments, fragments == 1 ? "" : "s");
}

nlohmann::json ToJson(const std::string& name, const ext4dio::FileMap& map) {
  const ext4dio_map_info& info = map.info();
  const auto leaves = map.Extents();
  std::vector<uint64_t> expected;
  const size_t fragments = Fragments(leaves, &expected);
  nlohmann::json extents = nlohmann::json::array();
  for (size_t i = 0; i < leaves.size(); ++i) {
    const ext4dio_extent& e = leaves[i];
    extents.push_back({{"logical_block", e.logical_block},
                       {"physical_block", e.physical_block},
                       {"blocks", e.blocks},
                       {"unwritten", (e.flags & EXT4DIO_EXTENT_UNWRITTEN) != 0},
                       {"last", i + 1 == leaves.size()},
                       {"eof", (e.logical_block + e.blocks) * info.block_size >= info.size}});
  }
  nlohmann::json out = {
      {"file", name},
      {"inode", info.inode},
      {"block_size", info.block_size},
      {"cluster_size", info.cluster_size},
      {"size", info.size},
      {"device", info.device},
      {"device_offset", info.device_offset},
      {"source", SourceName(info.source)},
      {"extent_tree", info.extent_tree != 0},
      {"warning", info.warning ? nlohmann::json(info.warning) : nlohmann::json()},
      {"fragments", fragments},
      {"leaf_extents", leaves.size()},
      {"extents", extents},
  };
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  namespace cli = ext4dio::cli;
  constexpr const char* kTool = "ext4dio-map";
  CLI::App app{
      "Print the extent map of each TARGET, as filefrag -v does: a file on a mounted "
      "ext4 (cross-checked against FIEMAP), or with --image a path inside an image or "
      "unmounted device. \"N extents found\" counts fragments (physically contiguous "
      "runs) as filefrag does; the rows are the leaf extents.",
      kTool};
  cli::LocationArgs loc;
  std::vector<std::string> targets;
  bool json = false;
  cli::AddLocationOptions(app, loc);
  app.add_flag("--json", json,
               "Print one JSON object per TARGET, one per line, instead of the table");
  app.add_option("TARGET", targets,
                 "Files on a mounted ext4, or with --image paths inside it");
  app.set_help_flag("-h,--help", "Display this help and exit");
  app.set_version_flag("--version", std::string(kTool) + " " + ext4dio_version(),
                       "Output version information and exit");
  app.footer("Exit status: 0 success, 1 failure (of any TARGET: the others are still "
             "printed), 2 usage error.");
  cli::UseGnuHelp(app, {"ext4dio-map [OPTION]... TARGET...",
                        "ext4dio-map --image=IMG [OPTION]... PATH...",
                        "ext4dio-map --image=IMG [OPTION]... --inode=N"});

  if (int rc = cli::Parse(app, argc, argv); rc >= 0) return rc;
  if (int rc = cli::CheckLocation(kTool, app, loc, targets); rc >= 0) return rc;

  std::vector<std::string> names = targets;
  if (loc.inode) names = {"inode " + std::to_string(loc.inode)};
  int status = cli::kExitOk;
  bool hinted = false;
  for (size_t i = 0; i < names.size(); ++i) {
    ext4dio::Location where;
    where.image = loc.image;
    where.image_offset = loc.image_offset;
    where.inode = loc.inode;
    if (!loc.inode) where.path = targets[i];
    const std::string& name = names[i];
    auto map = ext4dio::FileMap::Load(where);
    if (!map.ok()) {
      std::fflush(stdout);  // keep stdout and stderr in order on a terminal
      std::fprintf(stderr, "%s: %s: %s\n", kTool, name.c_str(),
                   std::string(map.status().message()).c_str());
      // A whole disk given as --image: say where its filesystems are.
      if (!hinted) {
        hinted = true;
        std::fputs(cli::PartitionHint(kTool, app, loc).c_str(), stderr);
      }
      status = cli::kExitFailure;
      continue;
    }
    if (!map->warning().empty())
      std::fprintf(stderr, "%s: warning: %s: %s\n", kTool, name.c_str(), map->warning().c_str());
    if (json) {
      std::cout << ToJson(name, *map).dump() << "\n";
      std::cout.flush();
    } else {
      PrintTable(name, *map);
    }
  }
  std::fflush(stdout);
  if (std::ferror(stdout) || !std::cout) {
    std::fprintf(stderr, "%s: writing standard output failed\n", kTool);
    return cli::kExitFailure;
  }
  return status;
}
