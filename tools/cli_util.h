// Helpers shared by the ext4dio command-line tools: size arguments, the
// option-parser's exit codes, and one-line error reporting.
#ifndef EXT4DIO_TOOLS_CLI_UTIL_H_
#define EXT4DIO_TOOLS_CLI_UTIL_H_

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ext4dio/ext4dio.h"

#include <CLI/CLI.hpp>

namespace ext4dio::cli {

// Exit codes of every tool (DESIGN §6).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// "4096", "4k", "4K", "4KiB", "1M", "2g", "1TiB": powers of 1024. nullopt on
// anything else, including overflow.
std::optional<uint64_t> ParseSize(std::string_view text);

// A CLI11 validator/transform that accepts ParseSize syntax and rewrites the
// value to plain bytes.
CLI::Validator SizeValidator();

struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<char, FreeDeleter>;

// A buffer of `size` bytes aligned for direct I/O (at least `align` and
// 4096); nullptr when out of memory.
Buffer AllocBuffer(uint64_t size, uint32_t align);

// Runs app.parse; returns -1 to go on, or the process exit code (0 after
// --help/--version, kExitUsage for parser errors; CLI11's own codes 105-114
// are never leaked). A parser error is reported as GNU tools do: "TOOL:
// message", then "Try 'TOOL --help' for more information.".
int Parse(CLI::App& app, int argc, char** argv);

// Prints a usage error the same way and returns kExitUsage.
int UsageError(const std::string& tool, const std::string& message);

// Makes app's --help read like a GNU tool's: `usage` lines first ("Usage:
// ext4dio-map [OPTION]... TARGET..."), the description, then one line per
// option as "  -o, --output=FILE   text" (the value's name from the
// option's type_name, no CLI11 type tags or "Excludes:"), --help and
// --version last, then the footer. Every option that takes a value must
// have a type_name.
void UseGnuHelp(CLI::App& app, std::vector<std::string> usage);

// Where the filesystem is, as the three tools take it: --image, and inside
// it --image-offset or --partition; --inode instead of a TARGET.
struct LocationArgs {
  std::string image;
  uint64_t image_offset = 0;
  uint64_t inode = 0;
  uint32_t partition = 0;  // 1-based; 0: not given
};
// Adds --image, --image-offset, --partition and --inode to `app`.
void AddLocationOptions(CLI::App& app, LocationArgs& args);
// After parsing: the usage checks shared by the tools (each option's
// prerequisites, TARGET or --inode, --inode 0, a block device given as
// TARGET), then --partition resolved into image_offset. `targets`: the
// TARGETs given. Returns -1 to go on, or the exit code after printing why
// (kExitUsage for usage errors, kExitFailure when the partition table does
// not have what --partition asks for).
int CheckLocation(const std::string& tool, const CLI::App& app, LocationArgs& args,
                  const std::vector<std::string>& targets);

// One partition of a partition table found by libblkid.
struct Partition {
  int number = 0;        // as the table numbers it (1-based)
  uint64_t offset = 0;   // bytes from the start of the image
  uint64_t size = 0;     // bytes
  std::string type;      // the table's type name or code ("0x83", a GPT type GUID)
  std::string name;      // a GPT partition name, else ""
  std::string content;   // the filesystem found in it ("ext4", "vfat"), or ""
};
struct PartitionTable {
  std::string type;  // "dos" (MBR) or "gpt"
  std::vector<Partition> partitions;
};
// The partition table at the start of `image`, or nullopt when there is
// none (or it cannot be read).
std::optional<PartitionTable> ProbePartitions(const std::string& image);
// When the tool read an --image at offset 0 (neither --image-offset nor
// --partition given) and the image holds a partition table: lines (each
// ending in a newline) saying so and naming every partition, its type,
// filesystem and byte offset, and how to choose one; "" otherwise. For the
// tools' failure to find a filesystem there.
std::string PartitionHint(const std::string& tool, const CLI::App& app, const LocationArgs& args);

// What a path or descriptor refers to, for "same file" checks that must
// not be fooled by hard links, symlinks or a second device node: a file by
// st_dev+st_ino, a block device by its number (st_rdev), and a loop device
// also by the file behind it. Never compared by name.
struct FileId {
  bool block = false;  // a block device: `dev` is its number
  dev_t dev = 0;
  ino_t ino = 0;
  std::optional<std::pair<dev_t, ino_t>> backing;  // a loop device's backing file
};
FileId IdOf(const struct stat& st);
// The block device with number `rdev` (e.g. the one holding a mounted file:
// its st_dev).
FileId BlockDeviceId(dev_t rdev);
// Why data written to `a` could land in `b` (or `a` is `b`): a cp-like
// sentence naming both, or "" when they are unrelated.
std::string SameData(const FileId& a, const std::string& a_name, const FileId& b,
                     const std::string& b_name);

// What a tool's TARGET stands for, which its other file (ext4dio-read's
// output, ext4dio-write's input) must not be: in mounted mode the target
// file and the block device holding it; in image mode the image. Taken by
// stat(2) before the library opens the target (so a refusal writes
// nothing); ConfirmTarget then checks that the library opened the same
// inode.
struct ProtectedFiles {
  std::vector<std::pair<FileId, std::string>> files;  // identity, name
  std::optional<ino_t> target_ino;                     // mounted mode
};
ProtectedFiles ProtectFiles(const std::string& image, const std::string& target);
// "" or why `other` (named `name`) must not be used with the target, e.g.
// "'out' and 'f' are the same file".
std::string Conflict(const ProtectedFiles& p, const struct stat& other, const std::string& name);
// False when, in mounted mode, the library opened another inode than the
// one ProtectFiles saw (the path was switched in between).
inline bool SameTarget(const ProtectedFiles& p, uint64_t opened_inode) {
  return !p.target_ino || static_cast<uint64_t>(*p.target_ino) == opened_inode;
}

// SIGINT and SIGTERM stop a tool cleanly: the handler only records the
// signal (and wakes WaitReady); the I/O loops check StopSignal(), finish
// what is in flight, close the file through the library and exit with
// 128 + the signal (130, 143). A second signal kills the tool at once.
void InstallStopHandlers();
// 0, or the first stop signal received.
int StopSignal();
// Waits until `fd` is ready for `events` (poll(2) flags) or a stop signal
// arrives: true when ready, false when stopped.
bool WaitReady(int fd, short events);
// "SIGINT" / "SIGTERM".
const char* SignalName(int sig);

// A snapshot of the file's current map, owned by the caller (any thread).
struct MapFree {
  void operator()(ext4dio_map* m) const { ext4dio_map_free(m); }
};
using MapSnapshot = std::unique_ptr<ext4dio_map, MapFree>;
inline MapSnapshot SnapshotMap(const ext4dio_file* file) {
  ext4dio_map* m = nullptr;
  if (ext4dio_file_map_snapshot(file, &m) != 0) return nullptr;
  return MapSnapshot(m);
}

// The inode number the library opened (0 when it cannot say).
inline uint64_t OpenedInode(const ext4dio_file* file) {
  const MapSnapshot snapshot = SnapshotMap(file);
  ext4dio_map_info mi;
  ext4dio_map_info_init(&mi);
  if (snapshot == nullptr || ext4dio_map_get_info(snapshot.get(), &mi) != 0) return 0;
  return mi.inode;
}

}  // namespace ext4dio::cli

#endif  // EXT4DIO_TOOLS_CLI_UTIL_H_
