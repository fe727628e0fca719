// Errors and check macros.
//
// kbit throws for caller errors and uses assert only for internal invariants.
// Messages follow "[op] expected X, got Y" so a user sees what failed, what
// was expected and what was given. `UserError` marks bad input from outside
// the program (configs, files, command lines): executables exit with code 2.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace kbit {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad input from a file, a config or a command line (exit code 2).
class UserError : public Error {
 public:
  using Error::Error;
};

// Concatenates any streamable values into one string.
template <typename... Args>
std::string str(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

}  // namespace kbit

// KBIT_CHECK(cond, "[op] expected ...", value, ...): throws kbit::Error.
#define KBIT_CHECK(cond, ...)                                   \
  do {                                                          \
    if (!(cond)) throw ::kbit::Error(::kbit::str(__VA_ARGS__)); \
  } while (0)

// KBIT_USER_CHECK: the same for input from outside the program.
#define KBIT_USER_CHECK(cond, ...)                                  \
  do {                                                              \
    if (!(cond)) throw ::kbit::UserError(::kbit::str(__VA_ARGS__)); \
  } while (0)
