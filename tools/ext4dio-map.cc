// ext4dio-map: print a file's ext4 extent map (filefrag -v style, or JSON).
//
//   ext4dio-map [--image IMG [--image-offset N]] [--inode N] [--json] [TARGET]
//
// Image mode reads the filesystem in IMG with libext2fs; mounted mode reads
// the file's block device and cross-checks the tree with FIEMAP (exit 1 on a
// disagreement, naming the first difference).
#include <cinttypes>
#include <cstdio>
#include <iostream>
#include <string>

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
  const uint64_t eof_block = (info.size + bs - 1) / bs;
  for (size_t i = 0; i < extents.size(); ++i) {
    const ext4dio_extent& e = extents[i];
    std::string expected;
    if (i > 0) {
      const ext4dio_extent& p = extents[i - 1];
      if (p.physical_block + p.blocks != e.physical_block)
        expected = std::to_string(p.physical_block + p.blocks);
    }
    std::string flags;
    auto add = [&flags](const char* f) {
      if (!flags.empty()) flags += ",";
      flags += f;
    };
    if (e.flags & EXT4DIO_EXTENT_UNWRITTEN) add("unwritten");
    if (e.logical_block + e.blocks > eof_block) add("eof");
    if (i + 1 == extents.size()) add("last");
    std::printf("%4zu: %10" PRIu64 "..%10" PRIu64 ": %12" PRIu64 "..%12" PRIu64
                ": %6" PRIu64 ": %10s %s\n",
                i, e.logical_block, e.logical_block + e.blocks - 1,
                e.physical_block, e.physical_block + e.blocks - 1, e.blocks,
                expected.c_str(), flags.c_str());
  }
  std::printf("%s: %zu extent%s found\n", name.c_str(), extents.size(),
              extents.size() == 1 ? "" : "s");
}

nlohmann::json ToJson(const std::string& name, const ext4dio::FileMap& map) {
  const ext4dio_map_info& info = map.info();
  nlohmann::json extents = nlohmann::json::array();
  for (const ext4dio_extent& e : map.Extents()) {
    extents.push_back({{"logical_block", e.logical_block},
                       {"physical_block", e.physical_block},
                       {"blocks", e.blocks},
                       {"unwritten", (e.flags & EXT4DIO_EXTENT_UNWRITTEN) != 0}});
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
      {"extents", extents},
  };
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  namespace cli = ext4dio::cli;
  CLI::App app{
      "Print the extent map of a file on ext4: a file on a mounted filesystem "
      "(TARGET), or a path or inode inside an image or unmounted device "
      "(--image). Mounted files are cross-checked against FIEMAP.",
      "ext4dio-map"};
  std::string image, target;
  uint64_t image_offset = 0, inode = 0;
  bool json = false;
  app.add_option("--image", image,
                 "Image file or unmounted block device holding the filesystem");
  app.add_option("--image-offset", image_offset,
                 "Byte offset of the filesystem inside the image (K/M/G/T suffixes)")
      ->transform(cli::SizeValidator());
  app.add_option("--inode", inode, "Inode number instead of TARGET (image mode)");
  app.add_flag("--json", json, "Print one JSON object instead of the table");
  app.add_option("TARGET", target,
                 "File on a mounted ext4, or with --image a path inside it");
  app.set_version_flag("--version", std::string("ext4dio-map ") + ext4dio_version());
  app.footer("Exit status: 0 success, 1 failure, 2 usage error.");

  if (int rc = cli::Parse(app, argc, argv); rc >= 0) return rc;
  auto usage = [](const char* msg) {
    std::fprintf(stderr, "ext4dio-map: %s (see --help)\n", msg);
    return cli::kExitUsage;
  };
  if (image.empty() && app.count("--image-offset")) return usage("--image-offset needs --image");
  if (image.empty() && inode) return usage("--inode needs --image");
  if (inode && !target.empty()) return usage("give TARGET or --inode, not both");
  if (!inode && target.empty()) return usage("no TARGET given");

  ext4dio::Location where;
  where.image = image;
  where.image_offset = image_offset;
  where.path = target;
  where.inode = inode;
  const std::string name = inode ? "inode " + std::to_string(inode) : target;

  auto map = ext4dio::FileMap::Load(where);
  if (!map.ok()) {
    std::fprintf(stderr, "ext4dio-map: %s: %s\n", name.c_str(),
                 std::string(map.status().message()).c_str());
    return cli::kExitFailure;
  }
  if (!map->warning().empty())
    std::fprintf(stderr, "ext4dio-map: warning: %s: %s\n", name.c_str(),
                 map->warning().c_str());
  if (json) {
    std::cout << ToJson(name, *map).dump() << "\n";
  } else {
    PrintTable(name, *map);
  }
  std::fflush(stdout);
  if (std::ferror(stdout)) {
    std::fprintf(stderr, "ext4dio-map: writing standard output failed\n");
    return cli::kExitFailure;
  }
  return cli::kExitOk;
}
