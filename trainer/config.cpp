// Config loading: YAML file -> checked values, then --set overrides, then
// defaults and the checks that need the final values (paths that must
// exist). Every failure is one UserError "<origin>: <key>: <what>", where
// the origin is "file:line", "--set key=value" or "file (default)".
#include "trainer/config.h"

// yaml-cpp 0.7 trips a false -Wdangling-pointer in GCC 12 (node/impl.h).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#include <yaml-cpp/yaml.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "core/error.h"

namespace kbit {
namespace fs = std::filesystem;

namespace {

// Maps a YAML node to the origin text for messages about it.
using SiteFn = std::function<std::string(const YAML::Node&)>;

[[noreturn]] void fail(const std::string& origin, const std::string& key,
                       const std::string& what) {
  throw UserError(origin + ": " + key + ": " + what);
}

// What a YAML node holds, for the "got ..." part of a message.
std::string describe_node(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Scalar:
      return "'" + node.Scalar() + "'";
    default:
      return "an undefined value";
  }
}

std::string expected_got(const KeySpec& spec, const std::string& got) {
  return "expected " + describe_expected(spec) + ", got " + got;
}

std::string last_component(const std::string& path) {
  size_t dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    out += (i ? ", " : "") + items[i];
  }
  return out;
}

// ---- scalars ----

// Drops one leading '+' (YAML allows it; from_chars does not).
std::string_view strip_plus(std::string_view s) {
  if (s.size() > 1 && s[0] == '+' && s[1] != '-') s.remove_prefix(1);
  return s;
}

std::optional<int64_t> parse_int(std::string_view s) {
  s = strip_plus(s);
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    return std::nullopt;
  }
  return v;
}

std::optional<double> parse_number(std::string_view s) {
  s = strip_plus(s);
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() ||
      !std::isfinite(v)) {
    return std::nullopt;
  }
  return v;
}

bool in_range(const KeySpec& spec, double v) {
  if (spec.min &&
      (spec.min->open ? v <= spec.min->value : v < spec.min->value)) {
    return false;
  }
  if (spec.max &&
      (spec.max->open ? v >= spec.max->value : v > spec.max->value)) {
    return false;
  }
  return true;
}

bool is_choice(const KeySpec& spec, const std::string& s) {
  return std::find(spec.choices.begin(), spec.choices.end(), s) !=
         spec.choices.end();
}

bool is_valid_name(const std::string& s) {
  if (s.empty() || s == "." || s == "..") return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '-' || c == '_';
  });
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower((unsigned char)c));
  return s;
}

// The value of scalar text `s` for `spec`, or nullopt when it does not fit
// (wrong type or out of range). Paths are checked for existence later.
std::optional<ConfigValue> parse_scalar(const KeySpec& spec,
                                        const std::string& s) {
  switch (spec.type) {
    case KeyType::integer: {
      auto v = parse_int(s);
      if (!v || !in_range(spec, double(*v))) return std::nullopt;
      if (!spec.choices.empty() && !is_choice(spec, std::to_string(*v))) {
        return std::nullopt;
      }
      return *v;
    }
    case KeyType::number: {
      auto v = parse_number(s);
      if (!v || !in_range(spec, *v)) return std::nullopt;
      return *v;
    }
    case KeyType::boolean:
      if (lower(s) == "true") return true;
      if (lower(s) == "false") return false;
      return std::nullopt;
    case KeyType::name:
      if (!is_valid_name(s)) return std::nullopt;
      return s;
    case KeyType::choice:
      if (!is_choice(spec, s)) return std::nullopt;
      return s;
    case KeyType::string:
    case KeyType::existing_dir:
    case KeyType::existing_file:
      return s;
    case KeyType::int_list:
    case KeyType::map_list:
      return std::nullopt;
  }
  return std::nullopt;
}

// "; did you mean 'adamw'?" for a near miss among a choice key's values.
std::string choice_hint(const KeySpec& spec, const std::string& got) {
  if (spec.type != KeyType::choice) return "";
  const std::string* best = nullptr;
  int best_d = 0;
  for (const std::string& c : spec.choices) {
    int d = edit_distance(lower(got), c);
    if (!best || d < best_d) best = &c, best_d = d;
  }
  if (!best || best_d > std::max<int>(2, int(got.size()) / 2)) return "";
  return "; did you mean '" + *best + "'?";
}

ConfigValue value_from_node(const KeySpec& spec, const YAML::Node& node,
                            const SiteFn& site);

ScalarValue to_scalar(const ConfigValue& v) {
  if (auto* i = std::get_if<int64_t>(&v)) return *i;
  if (auto* d = std::get_if<double>(&v)) return *d;
  if (auto* b = std::get_if<bool>(&v)) return *b;
  return std::get<std::string>(v);
}

std::string describe_fields(const KeySpec& spec) {
  return spec.required + " and any of " + join(spec.choices);
}

// One field of entry `at` ("optim.overrides[0]") of a map_list key: the
// required one (a non-empty string) or one checked by "<section>.<field>".
ScalarValue map_field(const KeySpec& spec, const std::string& at,
                      const YAML::Node& key, const YAML::Node& value,
                      const SiteFn& site) {
  const std::string field = key.Scalar();
  const std::string path = at + "." + field;
  if (field == spec.required) {
    if (!value.IsScalar() || value.Scalar().empty()) {
      fail(site(value), path,
           "expected a non-empty string, got " + describe_node(value));
    }
    return value.Scalar();
  }
  const std::string section = spec.path.substr(0, spec.path.rfind('.'));
  const KeySpec* field_spec = nullptr;
  if (std::find(spec.choices.begin(), spec.choices.end(), field) !=
      spec.choices.end()) {
    field_spec = find_key_spec(section + "." + field);
  }
  if (!field_spec) {
    std::string hint;
    for (const std::string& c : spec.choices) {
      if (edit_distance(lower(field), c) <= 2)
        hint = "; did you mean '" + c + "'?";
    }
    fail(site(key), path,
         "unknown field; expected " + describe_fields(spec) + hint);
  }
  KeySpec element = *field_spec;
  element.path = path;
  return to_scalar(value_from_node(element, value, site));
}

// The checked mappings of a map_list key; entry i is reported as
// "key[i]" (and "key[i].field") with its own line.
std::vector<ConfigMap> maps_from_node(const KeySpec& spec,
                                      const YAML::Node& node,
                                      const SiteFn& site) {
  if (!node.IsSequence()) {
    fail(site(node), spec.path, expected_got(spec, describe_node(node)));
  }
  std::vector<ConfigMap> out;
  for (size_t i = 0; i < node.size(); ++i) {
    YAML::Node item = node[i];
    const std::string at = str(spec.path, "[", i, "]");
    if (!item.IsMap()) {
      fail(site(item), at,
           "expected a mapping with " + describe_fields(spec) + ", got " +
               describe_node(item));
    }
    ConfigMap m;
    m.origin = site(item);
    for (auto it = item.begin(); it != item.end(); ++it) {
      if (!it->first.IsScalar()) {
        fail(site(it->first), at,
             "expected a field name, got " + describe_node(it->first));
      }
      const std::string field = it->first.Scalar();
      if (m.fields.count(field)) {
        fail(site(it->first), at + "." + field, "duplicate field");
      }
      m.fields[field] = map_field(spec, at, it->first, it->second, site);
    }
    if (!m.fields.count(spec.required)) {
      fail(m.origin, at,
           "expected the field " + spec.required + ", got " +
               (m.fields.empty() ? "an empty mapping" : "none"));
    }
    out.push_back(std::move(m));
  }
  return out;
}

// The checked value of `node` for `spec`. int_list elements are reported
// as "key[i]" with the element's own line.
ConfigValue value_from_node(const KeySpec& spec, const YAML::Node& node,
                            const SiteFn& site) {
  if (spec.type == KeyType::map_list) return maps_from_node(spec, node, site);
  if (spec.type == KeyType::int_list) {
    if (!node.IsSequence()) {
      fail(site(node), spec.path, expected_got(spec, describe_node(node)));
    }
    KeySpec element = spec;
    element.type = KeyType::integer;
    std::vector<int64_t> values;
    for (size_t i = 0; i < node.size(); ++i) {
      YAML::Node item = node[i];
      element.path = str(spec.path, "[", i, "]");
      std::optional<ConfigValue> v;
      if (item.IsScalar()) v = parse_scalar(element, item.Scalar());
      if (!v) {
        fail(site(item), element.path,
             expected_got(element, describe_node(item)));
      }
      values.push_back(std::get<int64_t>(*v));
    }
    return values;
  }

  std::optional<ConfigValue> v;
  if (node.IsScalar()) v = parse_scalar(spec, node.Scalar());
  if (!v) {
    std::string hint = node.IsScalar() ? choice_hint(spec, node.Scalar()) : "";
    fail(site(node), spec.path, expected_got(spec, describe_node(node)) + hint);
  }
  return *v;
}

// ---- key paths ----

bool is_section(const std::string& path) {
  const std::string prefix = path + ".";
  for (const KeySpec& spec : config_schema()) {
    if (spec.path.compare(0, prefix.size(), prefix) == 0) return true;
  }
  return false;
}

// Full paths of the keys and sections directly inside `section` ("" = top).
std::vector<std::string> children_of(const std::string& section) {
  const std::string prefix = section.empty() ? "" : section + ".";
  std::vector<std::string> out;
  for (const KeySpec& spec : config_schema()) {
    if (spec.path.compare(0, prefix.size(), prefix) != 0) continue;
    size_t dot = spec.path.find('.', prefix.size());
    std::string child = spec.path.substr(0, dot);
    if (std::find(out.begin(), out.end(), child) == out.end()) {
      out.push_back(child);
    }
  }
  return out;
}

// The rest of an "unknown key" message: a suggestion, or the valid keys.
// A leaf that exists in another section wins ("lr" -> "optim.lr"); else the
// candidate nearest by edit distance (on `compare` applied to both sides),
// if it is near enough to be a misspelling.
std::string unknown_key_hint(
    const std::string& key, const std::vector<std::string>& candidates,
    const std::function<std::string(const std::string&)>& compare,
    const std::string& otherwise) {
  const std::string leaf = last_component(key);
  for (const KeySpec& spec : config_schema()) {
    if (last_component(spec.path) == leaf) {
      return "unknown key; did you mean '" + spec.path + "'?";
    }
  }
  const std::string* best = nullptr;
  int best_d = 0;
  for (const std::string& c : candidates) {
    int d = edit_distance(compare(key), compare(c));
    if (!best || d < best_d) best = &c, best_d = d;
  }
  int near_enough = std::max<int>(2, int(compare(key).size()) / 2);
  if (best && best_d <= near_enough) {
    return "unknown key; did you mean '" + *best + "'?";
  }
  return "unknown key; " + otherwise;
}

std::string format_double(double v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, end);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string format_scalar_string(const std::string& s) {
  YAML::Emitter out;
  out << s;
  return out.c_str();
}

std::string format_quoted(const std::string& s) {
  YAML::Emitter out;
  out << YAML::DoubleQuoted << s;
  return out.c_str();
}

}  // namespace

std::string format_config_value(const ConfigValue& value) {
  struct Visitor {
    std::string operator()(int64_t v) const { return std::to_string(v); }
    std::string operator()(double v) const { return format_double(v); }
    std::string operator()(bool v) const { return v ? "true" : "false"; }
    std::string operator()(const std::string& v) const {
      return format_scalar_string(v);
    }
    std::string operator()(const std::vector<int64_t>& v) const {
      std::string out = "[";
      for (size_t i = 0; i < v.size(); ++i) {
        out += (i ? ", " : "") + std::to_string(v[i]);
      }
      return out + "]";
    }
    // Flow style, strings double-quoted (a pattern may hold ',' or '*').
    std::string operator()(const std::vector<ConfigMap>& v) const {
      std::string out = "[";
      for (size_t i = 0; i < v.size(); ++i) {
        out += i ? ", {" : "{";
        bool first = true;
        for (const auto& [field, value] : v[i].fields) {
          const auto* text = std::get_if<std::string>(&value);
          out += (first ? "" : ", ") + field + ": " +
                 (text ? format_quoted(*text)
                       : std::visit([&](const auto& x) { return (*this)(x); },
                                    value));
          first = false;
        }
        out += "}";
      }
      return out + "]";
    }
  };
  return std::visit(Visitor{}, value);
}

// ---- building a Config ----

class ConfigBuilder {
 public:
  explicit ConfigBuilder(const std::string& path) { config_.path_ = path; }

  void read_file();
  void apply_override(const std::string& text);
  Config finish();

 private:
  void walk(const YAML::Node& map, const std::string& section);
  void walk_entry(const YAML::Node& key_node, const YAML::Node& value,
                  const std::string& key);
  std::string site(const YAML::Node& node, int fallback_line) const;
  void fill_default(const KeySpec& spec);
  void check_path_exists(const KeySpec& spec) const;

  Config config_;
};

std::string ConfigBuilder::site(const YAML::Node& node,
                                int fallback_line) const {
  YAML::Mark mark = node.Mark();
  int line = mark.is_null() ? fallback_line : mark.line + 1;
  return line > 0 ? str(config_.path_, ":", line) : config_.path_;
}

void ConfigBuilder::read_file() {
  const std::string& path = config_.path_;
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    throw UserError(path + ": config file not found");
  }
  if (fs::is_directory(path, ec)) {
    throw UserError(path + ": expected a YAML config file, got a directory");
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) throw UserError(path + ": cannot read the config file");

  YAML::Node root;
  try {
    root = YAML::Load(text.str());
  } catch (const YAML::Exception& e) {
    std::string where =
        e.mark.is_null() ? path : str(path, ":", e.mark.line + 1);
    throw UserError(where + ": YAML syntax error: " + e.msg);
  }
  if (root.IsNull()) return;  // an empty file: every key at its default
  if (!root.IsMap()) {
    throw UserError(site(root, 1) + ": expected a mapping of keys (" +
                    join(children_of("")) + ") at the top level, got " +
                    describe_node(root));
  }
  walk(root, "");
}

void ConfigBuilder::walk(const YAML::Node& map, const std::string& section) {
  std::map<std::string, int> first_line;  // key -> line, for duplicates
  for (auto it = map.begin(); it != map.end(); ++it) {
    const YAML::Node& key_node = it->first;
    int line = key_node.Mark().line + 1;
    if (!key_node.IsScalar()) {
      throw UserError(site(key_node, 0) + ": " +
                      (section.empty() ? "(top level)" : section) +
                      ": expected a key name, got " + describe_node(key_node));
    }
    std::string key =
        section.empty() ? key_node.Scalar() : section + "." + key_node.Scalar();
    auto [seen, inserted] = first_line.emplace(key, line);
    if (!inserted) {
      fail(site(key_node, 0), key,
           str("duplicate key (first set at line ", seen->second, ")"));
    }
    walk_entry(key_node, it->second, key);
  }
}

void ConfigBuilder::walk_entry(const YAML::Node& key_node,
                               const YAML::Node& value,
                               const std::string& key) {
  int key_line = key_node.Mark().line + 1;
  if (const KeySpec* spec = find_key_spec(key)) {
    // A null value ("lr:") has the mark of the next token: use the key's.
    SiteFn where = [&](const YAML::Node& n) {
      return n.IsNull() ? site(key_node, key_line) : site(n, key_line);
    };
    ConfigValue v = value_from_node(*spec, value, where);
    config_.entries_[key] = {std::move(v), site(key_node, key_line)};
    return;
  }
  if (is_section(key)) {
    if (value.IsNull()) return;  // "optim:" with every key commented out
    if (!value.IsMap()) {
      fail(site(value, key_line), key,
           "expected a mapping of the keys " + join(children_of(key)) +
               ", got " + describe_node(value));
    }
    walk(value, key);
    return;
  }
  std::string section = key.substr(0, key.size() - last_component(key).size());
  if (!section.empty()) section.pop_back();  // the trailing '.'
  auto leaf = [](const std::string& s) { return last_component(s); };
  fail(site(key_node, key_line), key,
       unknown_key_hint(key, children_of(section), leaf,
                        "valid keys here: " + join(children_of(section))));
}

void ConfigBuilder::apply_override(const std::string& text) {
  const std::string origin = "--set " + text;
  size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw UserError(origin + ": expected key=value, e.g. optim.lr=3e-4");
  }
  const std::string key = text.substr(0, eq);
  const std::string value = text.substr(eq + 1);

  const KeySpec* spec = find_key_spec(key);
  if (!spec && is_section(key)) {
    fail(origin, key,
         "is a section, not a key; set one of " + join(children_of(key)));
  }
  if (!spec) {
    std::vector<std::string> all;
    for (const KeySpec& s : config_schema()) all.push_back(s.path);
    auto whole = [](const std::string& s) { return s; };
    fail(origin, key,
         unknown_key_hint(key, all, whole, "'train --help' lists the keys"));
  }

  SiteFn where = [&](const YAML::Node&) { return origin; };
  YAML::Node node;
  bool plain_text =
      spec->type == KeyType::string || spec->type == KeyType::name ||
      spec->type == KeyType::choice || spec->type == KeyType::existing_dir ||
      spec->type == KeyType::existing_file;
  if (plain_text) {
    node = YAML::Node(value);  // taken as written: paths may hold ':' or '#'
  } else {
    try {
      node = YAML::Load(value);
    } catch (const YAML::Exception&) {
      fail(origin, key, expected_got(*spec, "'" + value + "'"));
    }
  }
  config_.entries_[key] = {value_from_node(*spec, node, where), origin};
}

void ConfigBuilder::fill_default(const KeySpec& spec) {
  const std::string origin = config_.path_ + " (default)";
  if (spec.path == "name") {
    std::string stem = fs::path(config_.path_).stem().string();
    if (!is_valid_name(stem)) {
      fail(origin, spec.path,
           expected_got(spec, "'" + stem + "'") +
               " (the config file's stem); set name in the file");
    }
    config_.entries_[spec.path] = {stem, origin};
    return;
  }
  SiteFn where = [&](const YAML::Node&) { return origin; };
  YAML::Node node = YAML::Load(spec.default_text);
  config_.entries_[spec.path] = {value_from_node(spec, node, where), origin};
}

void ConfigBuilder::check_path_exists(const KeySpec& spec) const {
  const Config::Entry& e = config_.entries_.at(spec.path);
  const std::string& path = std::get<std::string>(e.value);
  std::error_code ec;
  bool ok = spec.type == KeyType::existing_dir ? fs::is_directory(path, ec)
                                               : fs::is_regular_file(path, ec);
  if (!ok) fail(e.origin, spec.path, expected_got(spec, "'" + path + "'"));
}

Config ConfigBuilder::finish() {
  for (const KeySpec& spec : config_schema()) {
    if (!config_.entries_.count(spec.path)) fill_default(spec);
  }
  for (const KeySpec& spec : config_schema()) {
    if (spec.type == KeyType::existing_dir ||
        spec.type == KeyType::existing_file) {
      check_path_exists(spec);
    }
  }
  return std::move(config_);
}

// ---- Config ----

Config Config::load(const std::string& path,
                    const std::vector<std::string>& overrides) {
  ConfigBuilder builder(path);
  builder.read_file();
  for (const std::string& o : overrides) builder.apply_override(o);
  return builder.finish();
}

const Config::Entry& Config::entry(const std::string& key) const {
  auto it = entries_.find(key);
  KBIT_CHECK(it != entries_.end(), "[config] unknown key '", key, "'");
  return it->second;
}

namespace {
template <typename V>
const V& get_as(const ConfigValue& value, const std::string& key,
                const char* type) {
  const V* v = std::get_if<V>(&value);
  KBIT_CHECK(v, "[config] expected ", key, " to be ", type, ", got ",
             format_config_value(value));
  return *v;
}
}  // namespace

int64_t Config::get_int(const std::string& key) const {
  return get_as<int64_t>(entry(key).value, key, "an integer");
}
double Config::get_double(const std::string& key) const {
  return get_as<double>(entry(key).value, key, "a number");
}
bool Config::get_bool(const std::string& key) const {
  return get_as<bool>(entry(key).value, key, "a boolean");
}
std::string Config::get_string(const std::string& key) const {
  return get_as<std::string>(entry(key).value, key, "a string");
}
std::vector<int64_t> Config::get_int_list(const std::string& key) const {
  return get_as<std::vector<int64_t>>(entry(key).value, key, "a list");
}
std::vector<ConfigMap> Config::get_map_list(const std::string& key) const {
  return get_as<std::vector<ConfigMap>>(entry(key).value, key,
                                        "a list of mappings");
}
std::string Config::origin(const std::string& key) const {
  return entry(key).origin;
}

std::string Config::to_yaml() const {
  std::ostringstream out;
  out << "# Resolved config (every key; defaults filled in) from " << path_
      << "\n";
  std::vector<std::string> open;  // the sections of the previous key
  for (const KeySpec& spec : config_schema()) {
    std::vector<std::string> parts;
    std::stringstream ss(spec.path);
    for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);

    size_t common = 0;
    while (common < open.size() && common + 1 < parts.size() &&
           open[common] == parts[common]) {
      ++common;
    }
    for (size_t i = common; i + 1 < parts.size(); ++i) {
      out << std::string(2 * i, ' ') << parts[i] << ":\n";
    }
    open.assign(parts.begin(), parts.end() - 1);
    out << std::string(2 * (parts.size() - 1), ' ') << parts.back() << ": "
        << format_config_value(entry(spec.path).value) << "  # " << spec.doc
        << "\n";
  }
  return out.str();
}

std::string Config::table() const {
  size_t key_width = 0, value_width = 0;
  for (const KeySpec& spec : config_schema()) {
    key_width = std::max(key_width, spec.path.size());
    value_width = std::max(value_width,
                           format_config_value(entry(spec.path).value).size());
  }
  std::ostringstream out;
  for (const KeySpec& spec : config_schema()) {
    const Entry& e = entry(spec.path);
    std::string value = format_config_value(e.value);
    std::string source = e.origin.rfind("--set", 0) == 0 ? "--set"
                         : e.origin.find("(default)") != std::string::npos
                             ? "default"
                             : "";
    std::string line = "  " + spec.path +
                       std::string(key_width - spec.path.size() + 2, ' ') +
                       value;
    if (!source.empty()) {
      line += std::string(value_width - value.size() + 2, ' ') + source;
    }
    out << line << "\n";
  }
  return out.str();
}

}  // namespace kbit
