// Helpers shared by the ext4dio command-line tools: size arguments, the
// option-parser's exit codes, and one-line error reporting.
#ifndef EXT4DIO_TOOLS_CLI_UTIL_H_
#define EXT4DIO_TOOLS_CLI_UTIL_H_

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

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
// are never leaked).
int Parse(CLI::App& app, int argc, char** argv);

}  // namespace ext4dio::cli

#endif  // EXT4DIO_TOOLS_CLI_UTIL_H_
