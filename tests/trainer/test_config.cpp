// Config loading and validation: every kind of bad input gives one message
// with the file, line, key path, what was expected and (for a misspelt key)
// the closest valid key. Messages are checked in full.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "trainer/config.h"
#include "trainer/temp_dir.h"
#include "trainer/train_mlp.h"

using kbit::Config;
using kbit::test::TempDir;

namespace {

// The UserError message of loading `path` with `overrides`, or "(loaded)".
std::string load_error(const std::string& path,
                       const std::vector<std::string>& overrides = {}) {
  try {
    Config::load(path, overrides);
  } catch (const kbit::UserError& e) {
    return e.what();
  }
  return "(loaded)";
}

// The UserError message of training `path` (which must fail before any
// work), or "(trained)".
std::string train_error(const std::string& path,
                        const std::vector<std::string>& overrides = {}) {
  try {
    kbit::train_mlp(Config::load(path, overrides), kbit::RunOptions{});
  } catch (const kbit::UserError& e) {
    return e.what();
  }
  return "(trained)";
}

// A valid config; tests replace one line of it. Line numbers are 1-based.
const char* kGood =
    "name: t\n"             // 1
    "model:\n"              // 2
    "  hidden: [32, 16]\n"  // 3
    "  dropout: 0.1\n"      // 4
    "optim:\n"              // 5
    "  name: adamw\n"       // 6
    "  lr: 0.001\n"         // 7
    "train:\n"              // 8
    "  batch_size: 64\n"    // 9
    "  epochs: 2\n";        // 10

// kGood with line `line` (1-based) replaced by `text`.
std::string with_line(int line, const std::string& text) {
  std::string out, rest = kGood;
  for (int i = 1; !rest.empty(); ++i) {
    size_t nl = rest.find('\n');
    out += (i == line ? text : rest.substr(0, nl)) + "\n";
    rest = rest.substr(nl + 1);
  }
  return out;
}

}  // namespace

TEST_CASE("config: a valid file loads with defaults filled in") {
  TempDir dir;
  std::string path = dir.write("good.yaml", kGood);
  Config c = Config::load(path, {});
  CHECK(c.get_string("name") == "t");
  CHECK(c.get_int_list("model.hidden") == std::vector<int64_t>{32, 16});
  CHECK(c.get_double("model.dropout") == 0.1);
  CHECK(c.get_string("optim.name") == "adamw");
  CHECK(c.get_int("train.batch_size") == 64);
  // Defaults from the schema.
  CHECK(c.get_int("seed") == 0);
  CHECK(c.get_string("model.activation") == "relu");
  CHECK(c.get_bool("optim.nesterov") == false);
  CHECK(c.get_double("optim.beta2") == 0.999);
  CHECK(c.get_string("train.schedule") == "cosine");
  CHECK(c.origin("optim.lr") == path + ":7");
  CHECK(c.origin("seed") == path + " (default)");
  // A getter of the wrong type is a programming error, not a UserError.
  CHECK_THROWS_AS(c.get_int("optim.lr"), kbit::Error);
  CHECK_THROWS_AS(c.get_int("optim.nope"), kbit::Error);
}

TEST_CASE("config: name defaults to the file's stem; empty file is valid") {
  TempDir dir;
  Config c = Config::load(dir.write("my_run.yaml", ""), {});
  CHECK(c.get_string("name") == "my_run");
  CHECK(c.get_int_list("model.hidden") == std::vector<int64_t>{1024, 1024});

  std::string bad = dir.write("my run.yaml", "");
  CHECK(load_error(bad) ==
        bad +
            " (default): name: expected a name of letters, digits, '.', "
            "'-' and '_', got 'my run' (the config file's stem); set name "
            "in the file");
}

TEST_CASE("config: a misspelt key names the closest valid key") {
  TempDir dir;
  std::string path = dir.write("x.yaml", with_line(7, "  lrr: 0.001"));
  CHECK(load_error(path) ==
        path + ":7: optim.lrr: unknown key; did you mean 'optim.lr'?");

  path = dir.write("x.yaml", with_line(9, "  batchsize: 64"));
  CHECK(load_error(path) == path +
                                ":9: train.batchsize: unknown key; did you "
                                "mean 'train.batch_size'?");

  path = dir.write("x.yaml", with_line(5, "optimizer:"));
  CHECK(load_error(path) ==
        path + ":5: optimizer: unknown key; did you mean 'optim'?");

  // A key of another section is suggested by its full path.
  path = dir.write("x.yaml", with_line(1, "lr: 0.1"));
  CHECK(load_error(path) ==
        path + ":1: lr: unknown key; did you mean 'optim.lr'?");

  // Nothing close: the valid keys of that section are listed instead.
  path = dir.write("x.yaml", with_line(4, "  colour: blue"));
  CHECK(load_error(path) == path +
                                ":4: model.colour: unknown key; valid keys "
                                "here: model.type, model.hidden, "
                                "model.activation, model.dropout, "
                                "model.n_layer, model.n_head, "
                                "model.d_model, model.block_size, "
                                "model.mlp_ratio, model.stable_embedding");
}

TEST_CASE("config: a wrong type names the line, key and expected type") {
  TempDir dir;
  std::string path = dir.write("x.yaml", with_line(9, "  batch_size: abc"));
  CHECK(load_error(path) ==
        path + ":9: train.batch_size: expected an integer >= 1, got 'abc'");

  path = dir.write("x.yaml", with_line(9, "  batch_size: 12.5"));
  CHECK(load_error(path) ==
        path + ":9: train.batch_size: expected an integer >= 1, got '12.5'");

  path = dir.write("x.yaml", with_line(7, "  lr: [1, 2]"));
  CHECK(load_error(path) ==
        path + ":7: optim.lr: expected a number > 0, got a list");

  path = dir.write("x.yaml", with_line(7, "  lr:"));
  CHECK(load_error(path) ==
        path + ":7: optim.lr: expected a number > 0, got nothing");

  path = dir.write("x.yaml", with_line(3, "  hidden: 32"));
  CHECK(load_error(path) == path +
                                ":3: model.hidden: expected a list of "
                                "integers >= 1, got '32'");

  path = dir.write("x.yaml", with_line(3, "  hidden: [32, x]"));
  CHECK(load_error(path) ==
        path + ":3: model.hidden[1]: expected an integer >= 1, got 'x'");

  path = dir.write("x.yaml", with_line(6, "  name: adamww"));
  CHECK(load_error(path) == path +
                                ":6: optim.name: expected one of sgd, adam, "
                                "adamw, rmsprop, adagrad, lion, lamb, lars, "
                                "got 'adamww'; did you mean 'adamw'?");

  path = dir.write("x.yaml", with_line(7, "  lr: 0.001\n  nesterov: yes"));
  CHECK(load_error(path) ==
        path + ":8: optim.nesterov: expected true or false, got 'yes'");

  path = dir.write("x.yaml", "name: t\noptim: adam\n");
  CHECK(load_error(path).rfind(
            path + ":2: optim: expected a mapping of the keys optim.name, "
                   "optim.lr,",
            0) == 0);
}

TEST_CASE("config: an out-of-range value names the bound") {
  TempDir dir;
  std::string path = dir.write("x.yaml", with_line(9, "  batch_size: 0"));
  CHECK(load_error(path) ==
        path + ":9: train.batch_size: expected an integer >= 1, got '0'");

  path = dir.write("x.yaml", with_line(4, "  dropout: 1.0"));
  CHECK(load_error(path) ==
        path + ":4: model.dropout: expected a number in [0, 1), got '1.0'");

  path = dir.write("x.yaml", with_line(7, "  lr: 0"));
  CHECK(load_error(path) ==
        path + ":7: optim.lr: expected a number > 0, got '0'");

  path = dir.write("x.yaml", with_line(7, "  lr: .inf"));
  CHECK(load_error(path) ==
        path + ":7: optim.lr: expected a number > 0, got '.inf'");

  // A list element is reported with its own line.
  path = dir.write("x.yaml", with_line(3, "  hidden:\n    - 8\n    - 0"));
  CHECK(load_error(path) ==
        path + ":5: model.hidden[1]: expected an integer >= 1, got '0'");

  path = dir.write("x.yaml", with_line(7, "  lr: 0.001\n  bits: 7"));
  CHECK(load_error(path) ==
        path + ":8: optim.bits: expected one of 32, 8, 4, got '7'");
}

TEST_CASE("config: optim keys for quantized states and new optimizers") {
  TempDir dir;
  const std::string sizes =
      "expected one of 0, 32, 64, 128, 256, 512, 1024, 2048, 4096";
  std::string path = dir.write("x.yaml", with_line(6, "  name: adamv"));
  CHECK(load_error(path) == path +
                                ":6: optim.name: expected one of sgd, adam, "
                                "adamw, rmsprop, adagrad, lion, lamb, lars, "
                                "got 'adamv'; did you mean 'adam'?");
  path = dir.write("x.yaml", with_line(7, "  lr: 0.001\n  block_size: 16"));
  CHECK(load_error(path) ==
        path + ":8: optim.block_size: " + sizes + ", got '16'");
  path = dir.write("x.yaml", with_line(7, "  block_size: 8192"));
  CHECK(load_error(path) ==
        path + ":7: optim.block_size: " + sizes + ", got '8192'");
  path = dir.write("x.yaml", with_line(7, "  block_size: 100"));
  CHECK(load_error(path) ==
        path + ":7: optim.block_size: " + sizes + ", got '100'");
  CHECK(load_error(dir.write("g.yaml", kGood), {"optim.block_size=1000"}) ==
        "--set optim.block_size=1000: optim.block_size: " + sizes +
            ", got '1000'");
  path = dir.write("x.yaml", with_line(7, "  map: dynamc"));
  CHECK(load_error(path) == path +
                                ":7: optim.map: expected one of dynamic, "
                                "linear, quantile, got 'dynamc'; did you mean "
                                "'dynamic'?");
  path = dir.write("x.yaml", with_line(7, "  percentile_clipping: 0"));
  CHECK(load_error(path) == path +
                                ":7: optim.percentile_clipping: expected an "
                                "integer in [1, 100], got '0'");

  path = dir.write("x.yaml", with_line(7,
                                       "  bits: 8\n  block_size: 2048\n"
                                       "  map: quantile"));
  Config c = Config::load(path, {"optim.name=lion"});
  CHECK(c.get_int("optim.bits") == 8);
  CHECK(c.get_int("optim.block_size") == 2048);
  CHECK(c.get_string("optim.map") == "quantile");
  CHECK(c.get_string("optim.name") == "lion");
  CHECK(c.get_bool("optim.blockwise"));
  CHECK(c.get_int("optim.min_8bit_size") == 4096);
}

TEST_CASE("config: optim.overrides is a list of checked mappings") {
  TempDir dir;
  std::string path =
      dir.write("x.yaml", with_line(7,
                                    "  overrides:\n"
                                    "    - {pattern: \"*.bias\", bits: 32}\n"
                                    "    - pattern: \"fc0.*\"\n"
                                    "      block_size: 64\n"
                                    "      map: linear"));
  Config c = Config::load(path, {});
  auto o = c.get_map_list("optim.overrides");
  REQUIRE(o.size() == 2);
  CHECK(std::get<std::string>(o[0].fields.at("pattern")) == "*.bias");
  CHECK(std::get<int64_t>(o[0].fields.at("bits")) == 32);
  CHECK(o[0].origin == path + ":8");
  CHECK(o[1].origin == path + ":9");
  CHECK(std::get<int64_t>(o[1].fields.at("block_size")) == 64);
  CHECK(std::get<std::string>(o[1].fields.at("map")) == "linear");
  CHECK(Config::load(dir.write("e.yaml", ""), {})
            .get_map_list("optim.overrides")
            .empty());

  // Each field is checked by its own key's spec, with its own line.
  path = dir.write("x.yaml", with_line(7,
                                       "  overrides:\n"
                                       "    - pattern: \"*.bias\"\n"
                                       "      bits: 7"));
  CHECK(load_error(path) == path +
                                ":9: optim.overrides[0].bits: expected one "
                                "of 32, 8, 4, got '7'");
  path = dir.write("x.yaml", with_line(7,
                                       "  overrides:\n"
                                       "    - {pattern: a, bits: 8}\n"
                                       "    - {bits: 8}"));
  CHECK(load_error(path) == path +
                                ":9: optim.overrides[1]: expected the field "
                                "pattern, got none");
  path = dir.write("x.yaml", with_line(7,
                                       "  overrides:\n"
                                       "    - {pattern: a, bitz: 8}"));
  CHECK(load_error(path) ==
        path +
            ":8: optim.overrides[0].bitz: unknown field; "
            "expected pattern and any of bits, "
            "block_size, map, blockwise, min_8bit_size, "
            "percentile_clipping, weight_decay; did you mean 'bits'?");
  path = dir.write("x.yaml", with_line(7, "  overrides: {pattern: a}"));
  CHECK(load_error(path) ==
        path +
            ":7: optim.overrides: expected a list of "
            "mappings, each with pattern and any of bits, "
            "block_size, map, blockwise, min_8bit_size, "
            "percentile_clipping, weight_decay, got a mapping");
  path = dir.write("x.yaml", with_line(7, "  overrides: [fc0]"));
  CHECK(load_error(path).rfind(
            path + ":7: optim.overrides[0]: expected a mapping with pattern",
            0) == 0);

  // --set takes flow YAML; to_yaml writes it back so that it loads again.
  path = dir.write("x.yaml", kGood);
  c = Config::load(path, {"optim.overrides=[{pattern: \"fc*,x\", "
                          "weight_decay: 0}]"});
  o = c.get_map_list("optim.overrides");
  REQUIRE(o.size() == 1);
  CHECK(std::get<std::string>(o[0].fields.at("pattern")) == "fc*,x");
  CHECK(std::get<double>(o[0].fields.at("weight_decay")) == 0.0);
  CHECK(o[0].origin ==
        "--set optim.overrides=[{pattern: \"fc*,x\", "
        "weight_decay: 0}]");
  Config back = Config::load(dir.write("back.yaml", c.to_yaml()), {});
  CHECK(back.to_yaml().substr(back.to_yaml().find('\n')) ==
        c.to_yaml().substr(c.to_yaml().find('\n')));
  CHECK(back.get_map_list("optim.overrides")[0].fields == o[0].fields);
}

TEST_CASE("config: a missing data directory names the file and line") {
  // data.path is a file or a folder depending on data.dataset, so the
  // dataset's loader checks it (before any run folder exists), with the
  // origin of the final value: an override may fix it.
  TempDir dir;
  std::string path = dir.write("x.yaml", "data:\n  path: /nope/fashion\n");
  CHECK(train_error(path) == path +
                                 ":2: data.path: expected an existing "
                                 "directory, got '/nope/fashion'");
  CHECK(train_error(path, {"data.path=/nope"}) ==
        "--set data.path=/nope: data.path: expected an existing directory, "
        "got '/nope'");
  Config c = Config::load(path, {"data.path=" + dir.path().string()});
  CHECK(c.get_string("data.path") == dir.path().string());
}

TEST_CASE("config: --set overrides a key, and bad overrides say why") {
  TempDir dir;
  std::string path = dir.write("x.yaml", kGood);
  Config c = Config::load(path, {"optim.lr=3e-4", "model.hidden=[8]",
                                 "optim.nesterov=true", "name=other"});
  CHECK(c.get_double("optim.lr") == 3e-4);
  CHECK(c.get_int_list("model.hidden") == std::vector<int64_t>{8});
  CHECK(c.get_bool("optim.nesterov"));
  CHECK(c.get_string("name") == "other");
  CHECK(c.origin("optim.lr") == "--set optim.lr=3e-4");

  CHECK(load_error(path, {"optim.lr=abc"}) ==
        "--set optim.lr=abc: optim.lr: expected a number > 0, got 'abc'");
  CHECK(load_error(path, {"optim.lr=-1"}) ==
        "--set optim.lr=-1: optim.lr: expected a number > 0, got '-1'");
  CHECK(load_error(path, {"optim.lr="}) ==
        "--set optim.lr=: optim.lr: expected a number > 0, got nothing");
  CHECK(load_error(path, {"optim.lrr=1"}) ==
        "--set optim.lrr=1: optim.lrr: unknown key; did you mean "
        "'optim.lr'?");
  CHECK(load_error(path, {"optimm.beta1=0.8"}) ==
        "--set optimm.beta1=0.8: optimm.beta1: unknown key; did you mean "
        "'optim.beta1'?");
  CHECK(load_error(path, {"colour=blue"}) ==
        "--set colour=blue: colour: unknown key; 'train --help' lists the "
        "keys");
  CHECK(load_error(path, {"optim.lr"}) ==
        "--set optim.lr: expected key=value, e.g. optim.lr=3e-4");
  CHECK(load_error(path, {"model.hidden=[8, 0]"}) ==
        "--set model.hidden=[8, 0]: model.hidden[1]: expected an integer >= "
        "1, got '0'");
  CHECK(load_error(path, {"model.hidden=[8"}) ==
        "--set model.hidden=[8: model.hidden: expected a list of integers >= "
        "1, got '[8'");
  CHECK(load_error(path, {"optim=1"})
            .rfind("--set optim=1: optim: is a section, not a key; set one of "
                   "optim.name, optim.lr,",
                   0) == 0);
}

TEST_CASE("config: YAML syntax errors and missing files name the file") {
  TempDir dir;
  std::string path = dir.write("x.yaml", with_line(3, "  hidden: [32, 16"));
  std::string msg = load_error(path);
  CAPTURE(msg);
  CHECK(msg.rfind(path + ":4: YAML syntax error: ", 0) == 0);

  path = dir.write("x.yaml", "optim:\n  lr: 1\n   eps: 2\n");
  msg = load_error(path);
  CAPTURE(msg);
  CHECK(msg.rfind(path + ":3: YAML syntax error: ", 0) == 0);

  path = dir.write("x.yaml", "- 1\n- 2\n");
  CHECK(load_error(path) == path +
                                ":1: expected a mapping of keys (name, seed, "
                                "model, data, optim, train) at the top "
                                "level, got a list");

  std::string missing = dir / "missing.yaml";
  CHECK(load_error(missing) == missing + ": config file not found");
  CHECK(load_error(dir.path().string()) ==
        dir.path().string() + ": expected a YAML config file, got a directory");
}

TEST_CASE("config: a duplicate key names both lines") {
  TempDir dir;
  std::string path = dir.write("x.yaml", with_line(7, "  lr: 1\n  lr: 2"));
  CHECK(load_error(path) ==
        path + ":8: optim.lr: duplicate key (first set at line 7)");
}

TEST_CASE("config: to_yaml holds every key and loads back the same") {
  TempDir dir;
  Config c = Config::load(dir.write("x.yaml", kGood),
                          {"optim.eps=1e-6", "model.activation=gelu"});
  std::string yaml = c.to_yaml();
  Config back = Config::load(dir.write("resolved.yaml", yaml), {});
  for (const kbit::KeySpec& spec : kbit::config_schema()) {
    CAPTURE(spec.path);
    CHECK(back.origin(spec.path).find("(default)") == std::string::npos);
  }
  auto body = [](const std::string& s) { return s.substr(s.find('\n')); };
  CHECK(body(back.to_yaml()) == body(yaml));
  CHECK(back.get_double("optim.eps") == 1e-6);
  CHECK(back.get_string("model.activation") == "gelu");

  std::string table = c.table();
  for (const kbit::KeySpec& spec : kbit::config_schema()) {
    CHECK(table.find("  " + spec.path + " ") != std::string::npos);
  }
  CHECK(table.find("1e-06") != std::string::npos);
}

TEST_CASE("config: schema descriptions and edit distance") {
  CHECK(kbit::edit_distance("", "abc") == 3);
  CHECK(kbit::edit_distance("kitten", "sitting") == 3);
  CHECK(kbit::edit_distance("lr", "lr") == 0);
  const kbit::KeySpec* dropout = kbit::find_key_spec("model.dropout");
  REQUIRE(dropout);
  CHECK(kbit::describe_expected(*dropout) == "a number in [0, 1)");
  CHECK(kbit::find_key_spec("model") == nullptr);
  // Every default in the schema is itself valid (an empty file loads).
  TempDir dir;
  CHECK(load_error(dir.write("empty.yaml", "")) == "(loaded)");
}
