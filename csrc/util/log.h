// zcoll's one logging sink: whole lines on stderr, each naming the host, the process and the
// rank it concerns, e.g.
//
//   zcoll node-a:12345 [rank 3] INFO: group of 4 ranks on 2 hosts x 2 ranks (...); transport shm+tcp
//
// Levels (ZCOLL_DEBUG, parsed by python/zcoll/config.py and carried per group in BackendConfig and
// TransportOptions): WARN (the default: warnings only) < INFO (choices: topology, addresses,
// algorithms, compression) < TRACE (one line per collective). Python's messages come through the
// same sink (zcoll._C.log). Why stderr and not Python's logging: docs/architecture.md, "Logging".
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace zcoll::log {

enum class Level : int { kWarn = 0, kInfo = 1, kTrace = 2 };

const char* levelName(Level level);  // "WARN", "INFO", "TRACE"
// "WARN", "INFO" or "TRACE" (exactly, as config.py normalises them) -> true and *out.
bool parseLevel(std::string_view name, Level* out);

// Writes "zcoll <host>:<pid> [rank <rank>] <LEVEL>: <message>\n" to stderr in one write(2) (the
// "[rank ...] " part only where rank >= 0). Thread-safe: lines of one process never interleave,
// and a line up to PIPE_BUF bytes stays whole among other processes writing to the same pipe.
// Writes whatever it is given: callers check the level first (Logger does).
void write(Level level, int rank, std::string_view message);

// What one group (or transport) logs through: its level and its rank. Cheap to copy; a message
// above the level costs one comparison, its arguments are never formatted.
struct Logger {
  Level level = Level::kWarn;
  int rank = -1;

  bool enabled(Level l) const { return static_cast<int>(l) <= static_cast<int>(level); }

  template <typename... Args>
  void operator()(Level l, const Args&... args) const {
    if (!enabled(l)) return;
    std::ostringstream os;
    (os << ... << args);
    write(l, rank, os.str());
  }
  template <typename... Args>
  void warn(const Args&... args) const { (*this)(Level::kWarn, args...); }
  template <typename... Args>
  void info(const Args&... args) const { (*this)(Level::kInfo, args...); }
  template <typename... Args>
  void trace(const Args&... args) const { (*this)(Level::kTrace, args...); }
};

}  // namespace zcoll::log
