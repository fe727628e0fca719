// Config: a validated tree of settings loaded from YAML (DESIGN.md section 8).
//
// Every key is declared once in the schema (trainer/schema.cpp) with its
// type, default, bounds and a one-line doc. Config::load reads a YAML file,
// applies "a.b=value" overrides, and checks everything before anything runs:
// an unknown key, a wrong type or an out-of-range value throws one UserError
// that names the file, the line, the key path, what was expected and, for a
// misspelt key, the closest valid one. A loaded Config holds every key of the
// schema (defaults filled in) and can only be read.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace kbit {

// ---- the schema ----

enum class KeyType {
  integer,        // int64, e.g. "128"
  number,         // double, e.g. "1e-3" (integers accepted)
  boolean,        // true | false
  string,         // any scalar
  name,           // letters, digits, '.', '-', '_' (a run folder name)
  choice,         // one of `choices` (a string)
  int_list,       // a list of integers, e.g. [1024, 1024]
  existing_dir,   // a path to a directory that exists
  existing_file,  // a path to a regular file that exists
  map_list,       // a list of mappings, e.g. [{pattern: "*.bias", bits: 32}]:
                  // each holds `required` and some of `choices`, each such
                  // field checked by the spec of "<section>.<field>"
};

// One end of a numeric range; `open` excludes the value itself.
struct Bound {
  double value = 0.0;
  bool open = false;
};

struct KeySpec {
  std::string path;  // dotted key path, "optim.lr"
  KeyType type;
  std::string default_text;  // the default as YAML text ("" = see doc)
  std::optional<Bound> min;  // integer, number, int_list elements
  std::optional<Bound> max;
  std::vector<std::string> choices;  // choice; integer (allowed values);
                                     // map_list (optional fields)
  std::string doc;                   // one line
  std::string required;              // map_list: the field each entry needs
};

// Every key, in the order they are printed and saved.
const std::vector<KeySpec>& config_schema();
// The spec of `path`, or nullptr.
const KeySpec* find_key_spec(const std::string& path);
// "an integer >= 1", "a number in [0, 1)", "one of sgd, adam, adamw"...
std::string describe_expected(const KeySpec& spec);
// Levenshtein distance (for "did you mean").
int edit_distance(const std::string& a, const std::string& b);

// ---- the loaded config ----

using ScalarValue = std::variant<int64_t, double, bool, std::string>;

// One mapping of a map_list key, its fields checked.
struct ConfigMap {
  std::map<std::string, ScalarValue> fields;
  std::string origin;  // where the mapping starts: "configs/x.yaml:12"
};

using ConfigValue = std::variant<int64_t, double, bool, std::string,
                                 std::vector<int64_t>, std::vector<ConfigMap>>;

class Config {
 public:
  // Reads `path` (YAML), applies `overrides` ("optim.lr=3e-4", each value
  // parsed as YAML), fills defaults and validates. Throws UserError. The
  // default of `name` is the file's stem ("configs/mlp.yaml" -> "mlp").
  static Config load(const std::string& path,
                     const std::vector<std::string>& overrides);

  // Typed getters; throw kbit::Error for an unknown key or a wrong type
  // (a programming error: the schema decides the types).
  int64_t get_int(const std::string& key) const;
  double get_double(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  std::vector<int64_t> get_int_list(const std::string& key) const;
  std::vector<ConfigMap> get_map_list(const std::string& key) const;

  // Where a key's value came from, for messages about it later (a data
  // file missing in data.path...): "configs/x.yaml:4", "--set data.path=/x"
  // or "configs/x.yaml (default)".
  std::string origin(const std::string& key) const;
  const std::string& path() const { return path_; }

  std::string to_yaml() const;  // the resolved config, every key
  std::string table() const;    // aligned "key  value" lines for stderr

 private:
  struct Entry {
    ConfigValue value;
    std::string origin;
  };
  const Entry& entry(const std::string& key) const;

  std::string path_;
  std::map<std::string, Entry> entries_;

  friend class ConfigBuilder;
};

// The value of a key as YAML text ("1e-3", "[1024, 1024]", "adamw").
std::string format_config_value(const ConfigValue& value);

}  // namespace kbit
