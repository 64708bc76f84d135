#include "cli_util.h"

#include <algorithm>
#include <cctype>
#include <limits>

namespace ext4dio::cli {

std::optional<uint64_t> ParseSize(std::string_view text) {
  size_t i = 0;
  uint64_t value = 0;
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0]))) return std::nullopt;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    const uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - d) / 10) return std::nullopt;
    value = value * 10 + d;
    ++i;
  }
  std::string suffix;
  for (; i < text.size(); ++i) suffix += static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
  int shift = 0;
  if (!suffix.empty()) {
    switch (suffix[0]) {
      case 'k': shift = 10; break;
      case 'm': shift = 20; break;
      case 'g': shift = 30; break;
      case 't': shift = 40; break;
      default: return std::nullopt;
    }
    const std::string rest = suffix.substr(1);
    if (!(rest.empty() || rest == "ib" || rest == "b")) return std::nullopt;
  }
  if (shift && value > (std::numeric_limits<uint64_t>::max() >> shift)) return std::nullopt;
  return value << shift;
}

CLI::Validator SizeValidator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        auto parsed = ParseSize(value);
        if (!parsed) {
          return "'" + value + "' is not a size (bytes, or a number with K, M, G or T)";
        }
        value = std::to_string(*parsed);
        return {};
      },
      "SIZE", "size");
}

Buffer AllocBuffer(uint64_t size, uint32_t align) {
  void* p = nullptr;
  const size_t a = std::max<size_t>({align, sizeof(void*), 4096});
  if (posix_memalign(&p, a, std::max<uint64_t>(size, 1)) != 0) return nullptr;
  return Buffer(static_cast<char*>(p));
}

int Parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    app.exit(e);
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  return -1;
}

}  // namespace ext4dio::cli
