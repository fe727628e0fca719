#include "quant/quantized_tensor.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "kernels/cpu/quantize.h"

namespace kbit::quant {
namespace {

constexpr char kMagic[8] = {'K', 'B', 'I', 'T', 'Q', 'N', 'T', '\0'};
constexpr uint32_t kVersion = 1;
constexpr int64_t kMaxDims = 16;

// FNV-1a, 64 bits.
struct Checksum {
  uint64_t h = 0xcbf29ce484222325ull;
  void add(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  }
};

class Writer {
 public:
  explicit Writer(std::ostream& out) : out_(out) {}
  void bytes(const void* p, size_t n) {
    out_.write(static_cast<const char*>(p), std::streamsize(n));
    sum_.add(p, n);
  }
  template <typename T>
  void value(T v) {
    bytes(&v, sizeof v);
  }
  uint64_t checksum() const { return sum_.h; }

 private:
  std::ostream& out_;
  Checksum sum_;
};

class Reader {
 public:
  Reader(std::istream& in, const std::string& what) : in_(in), what_(what) {}
  void bytes(void* p, size_t n, const char* field) {
    in_.read(static_cast<char*>(p), std::streamsize(n));
    KBIT_USER_CHECK(in_.gcount() == std::streamsize(n), "[load ", what_,
                    "] expected ", n, " bytes of ", field, ", got ",
                    in_.gcount(), " (file truncated)");
    sum_.add(p, n);
  }
  template <typename T>
  T value(const char* field) {
    T v;
    bytes(&v, sizeof v, field);
    return v;
  }
  // A count, checked against a bound before anything is allocated.
  uint64_t count(const char* field, uint64_t max) {
    uint64_t v = value<uint64_t>(field);
    check(v <= max, field, str("at most ", max), v);
    return v;
  }
  template <typename A, typename B>
  void check(bool ok, const char* field, const A& expected, const B& got) {
    KBIT_USER_CHECK(ok, "[load ", what_, "] expected ", field, " ", expected,
                    ", got ", got);
  }
  uint64_t checksum() const { return sum_.h; }

 private:
  std::istream& in_;
  std::string what_;
  Checksum sum_;
};

}  // namespace

QuantizedTensor::QuantizedTensor(Shape shape, int64_t block_size,
                                 Codebook codebook, Tensor codes, Tensor absmax)
    : shape_(std::move(shape)),
      block_size_(block_size),
      codebook_(std::move(codebook)),
      codes_(std::move(codes)),
      absmax_(std::move(absmax)) {
  int64_t n = numel();
  KBIT_CHECK(codes_.dtype() == DType::u8 &&
                 codes_.numel() == cpu::code_bytes(n, codebook_.packed()),
             "[quantized tensor] expected ",
             cpu::code_bytes(n, codebook_.packed()), " u8 code bytes, got ",
             codes_.str());
  int64_t nb = n == 0 ? 0 : cpu::num_blocks(n, effective_block_size());
  KBIT_CHECK(absmax_.dtype() == DType::f32 && absmax_.numel() == nb,
             "[quantized tensor] expected ", nb, " f32 absmax, got ",
             absmax_.str());
}

int64_t QuantizedTensor::effective_block_size() const {
  return block_size_ == 0 ? std::max<int64_t>(numel(), 1) : block_size_;
}

void QuantizedTensor::save(std::ostream& out) const {
  Writer w(out);
  w.bytes(kMagic, sizeof kMagic);
  w.value(kVersion);
  const std::string& name = codebook_.name();
  w.value(uint32_t(name.size()));
  w.bytes(name.data(), name.size());
  w.value(uint32_t(codebook_.bits()));
  w.value(uint32_t(codebook_.size()));
  w.bytes(codebook_.codes().data(), codebook_.codes().size() * 4);
  w.value(uint32_t(shape_.size()));
  for (int64_t d : shape_) w.value(d);
  w.value(block_size_);
  w.value(uint64_t(codes_.numel()));
  w.bytes(codes_.raw_data(), codes_.nbytes());
  w.value(uint64_t(absmax_.numel()));
  w.bytes(absmax_.raw_data(), absmax_.nbytes());
  uint64_t sum = w.checksum();
  out.write(reinterpret_cast<const char*>(&sum), sizeof sum);
}

QuantizedTensor QuantizedTensor::load(std::istream& in,
                                      const std::string& what) {
  Reader r(in, what);
  char magic[8];
  r.bytes(magic, 8, "magic");
  r.check(std::memcmp(magic, kMagic, 8) == 0, "magic", "KBITQNT",
          "other bytes (not a kbit quantized tensor)");
  uint32_t version = r.value<uint32_t>("version");
  r.check(version == kVersion, "version", kVersion, version);

  uint32_t name_len = r.value<uint32_t>("name length");
  r.check(name_len >= 1 && name_len <= 64, "name length", "1..64", name_len);
  std::string name(name_len, '\0');
  r.bytes(name.data(), name_len, "codebook name");
  uint32_t bits = r.value<uint32_t>("bits");
  r.check(bits >= 1 && bits <= 8, "bits", "1..8", bits);
  uint32_t ncodes = r.value<uint32_t>("number of codes");
  r.check(ncodes >= 2 && ncodes <= (1u << bits), "number of codes",
          str("2..", 1u << bits), ncodes);
  std::vector<float> values(ncodes);
  r.bytes(values.data(), ncodes * 4, "codes");
  for (size_t i = 0; i < values.size(); ++i) {
    r.check(values[i] >= -1.f && values[i] <= 1.f &&
                (i == 0 || values[i] > values[i - 1]),
            "codebook values", "increasing in [-1, 1]", values[i]);
  }

  uint32_t ndim = r.value<uint32_t>("ndim");
  r.check(ndim <= kMaxDims, "ndim", str("at most ", kMaxDims), ndim);
  Shape shape(ndim);
  int64_t n = 1;
  for (auto& d : shape) {
    d = r.value<int64_t>("dimension");
    r.check(d >= 0 && d <= (int64_t(1) << 40), "dimension", "0..2^40", d);
    n *= d;
    r.check(n <= (int64_t(1) << 40), "numel", "at most 2^40", n);
  }
  int64_t block_size = r.value<int64_t>("block_size");
  r.check(block_size >= 0 && block_size <= (int64_t(1) << 40), "block_size",
          ">= 0", block_size);
  bool packed = ncodes <= 16;
  int64_t bs = block_size == 0 ? std::max<int64_t>(n, 1) : block_size;
  uint64_t want_codes = uint64_t(cpu::code_bytes(n, packed));
  uint64_t ncode_bytes = r.count("code bytes", want_codes);
  r.check(ncode_bytes == want_codes, "code bytes", want_codes, ncode_bytes);
  Tensor codes = Tensor::empty({int64_t(ncode_bytes)}, DType::u8);
  r.bytes(codes.raw_data(), ncode_bytes, "codes");
  uint64_t want_blocks = n == 0 ? 0 : uint64_t(cpu::num_blocks(n, bs));
  uint64_t nblocks = r.count("number of blocks", want_blocks);
  r.check(nblocks == want_blocks, "number of blocks", want_blocks, nblocks);
  Tensor absmax = Tensor::empty({int64_t(nblocks)}, DType::f32);
  r.bytes(absmax.raw_data(), nblocks * 4, "absmax");

  uint64_t want_sum = r.checksum();
  uint64_t sum = r.value<uint64_t>("checksum");
  r.check(sum == want_sum, "checksum", want_sum, str(sum, " (corrupt file)"));
  const uint8_t* c = codes.data<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    int code = packed ? (i % 2 == 0 ? c[i / 2] >> 4 : c[i / 2] & 15) : c[i];
    r.check(code < int(ncodes), "codes", str("< ", ncodes), code);
  }
  // A built-in type keeps its metadata (raw values) when the codes match.
  Codebook cb;
  if (is_codebook_name(name)) {
    Codebook named = make_codebook(name);
    if (named.codes() == values && named.bits() == int(bits)) cb = named;
  }
  if (!cb.defined()) cb = Codebook(name, int(bits), values);
  return QuantizedTensor(shape, block_size, cb, codes, absmax);
}

void QuantizedTensor::save(const std::string& path) const {
  std::ofstream out(path, std::ios::binary);
  KBIT_USER_CHECK(out, "[save] cannot open '", path, "' for writing");
  save(out);
  out.close();
  KBIT_USER_CHECK(out, "[save] failed writing '", path, "'");
}

QuantizedTensor QuantizedTensor::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KBIT_USER_CHECK(in, "[load] cannot open '", path, "'");
  return load(in, path);
}

bool identical(const QuantizedTensor& a, const QuantizedTensor& b) {
  return a.shape() == b.shape() && a.block_size() == b.block_size() &&
         a.codebook().name() == b.codebook().name() &&
         a.codebook().codes() == b.codebook().codes() &&
         a.codes().to_vector<uint8_t>() == b.codes().to_vector<uint8_t>() &&
         std::memcmp(a.absmax().raw_data(), b.absmax().raw_data(),
                     a.absmax().nbytes()) == 0 &&
         a.absmax().numel() == b.absmax().numel();
}

}  // namespace kbit::quant
