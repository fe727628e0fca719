// experiments/compare.py through its Python test (tests/python/
// test_compare.py): two made-up run folders, the Markdown table cell by
// cell, the PNG, and exit code 2 for folders that are not gpt runs. The
// script prints "test_compare: ok" and exits 0 only when all checks passed.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "trainer/temp_dir.h"

namespace fs = std::filesystem;

TEST_CASE("experiments: compare.py draws and tabulates two runs") {
  const std::string python = "/usr/bin/python3";
  const std::string script =
      std::string(KBIT_SOURCE_DIR) + "/tests/python/test_compare.py";
  if (!fs::exists(python)) {
    MESSAGE(
        "skipped: /usr/bin/python3 is missing (scripts/setup.sh "
        "installs python3, python3-numpy and python3-matplotlib)");
    return;
  }
  REQUIRE(fs::exists(script));
  kbit::test::TempDir dir;
  const std::string log = dir / "log.txt";
  const std::string cmd =
      "MPLBACKEND=Agg " + python + " '" + script + "' >'" + log + "' 2>&1";
  int status = std::system(cmd.c_str());
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::string out = kbit::test::read_text(log);
  INFO("test_compare.py output:\n", out);
  CHECK(code == 0);
  CHECK(out.find("test_compare: ok") != std::string::npos);
}
