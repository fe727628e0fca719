// build/kbit from the outside: the seed example and the refusals (exit 2,
// a message listing the valid choices).
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace {

struct Run {
  int status = -1;
  std::string out;  // stdout and stderr
};

std::string tool() {
  return std::string(KBIT_BINARY_DIR) + "/kbit";
}

Run run(const std::string& args) {
  std::string log = std::string(KBIT_BINARY_DIR) + "/kbit_tool_test.log";
  std::string cmd = tool() + " " + args + " > " + log + " 2>&1";
  int rc = std::system(cmd.c_str());
  Run r;
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  r.out = ss.str();
  std::remove(log.c_str());
  return r;
}

bool have_tool() {
  std::ifstream f(tool());
  return bool(f);
}

}  // namespace

TEST_CASE("quant: kbit quantize shows the int4 seed example") {
  if (!have_tool()) {
    MESSAGE("skipped: build/kbit is not built (run ./test or build all)");
    return;
  }
  Run r = run("quantize --dtype int4 -- -0.8 -0.7 0");
  CHECK(r.status == 0);
  CHECK(r.out.find("normalized: [-1, -0.875, 0]") != std::string::npos);
  CHECK(r.out.find("-7/7") != std::string::npos);
  CHECK(r.out.find("-6/7") != std::string::npos);
  Run m = run("map int4 --format csv");
  CHECK(m.status == 0);
  CHECK(m.out.find("0,-1,-7\n") != std::string::npos);
  CHECK(m.out.find("14,1,7\n") != std::string::npos);
}

TEST_CASE("quant: kbit refuses bad input with exit code 2") {
  if (!have_tool()) {
    MESSAGE("skipped: build/kbit is not built (run ./test or build all)");
    return;
  }
  struct Case {
    const char* args;
    const char* message;
  };
  for (const Case& c : {
           Case{"map int9", "expected one of int2..int8"},
           Case{"quantize --dtype foo -- 1", "expected one of int2..int8"},
           Case{"quantize --dtype int4 --block 48 -- 1",
                "expected --block 32, 64, 128"},
           Case{"error --dtype dynamic --block 100000",
                "expected --block 32, 64, 128"},
           Case{"quantize --dtype int4 -- 1 abc", "got 'abc'"},
           Case{"error --dtype dynamic --dist cauchy",
                "normal, uniform, laplace or lognormal"},
           Case{"error --dtype dynamic --n ten", "got 'ten'"},
           Case{"frobnicate",
                "expected a command map, quantize, error or sample"},
       }) {
    CAPTURE(std::string(c.args));
    Run r = run(c.args);
    CHECK(r.status == 2);
    CHECK(r.out.find(c.message) != std::string::npos);
  }
}
