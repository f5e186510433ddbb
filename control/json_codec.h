// The control socket's codec: one JSON line -> a typed request -> one
// ControlOps call -> one JSON reply (docs/control-api.md).
//
// Strict on purpose (an IKE agent's hook that sends something odd must get
// an error, not a guess):
//   - a line with a NUL byte, or nested deeper than kMaxDepth, is refused
//     before the JSON parser sees it (the parser recurses);
//   - unknown fields, and a member given twice, are an error on every
//     operation;
//   - integers are JSON integers: no strings, no negatives, no floats,
//     range-checked per field;
//   - SPIs are a JSON integer or "0x" + 1..8 hex digits (parse_spi_string);
//   - `encap` is an object with exactly `sport` and `dport` (1..65535), or
//     false (plain ESP, said explicitly), or absent (the tunnel decides);
//   - booleans are booleans.
// handle_line() never throws: every line gets exactly one reply.
//
// Keys: the pre-scan lifts the text of the top-level "key" member out of the
// line (into wiping storage) and overwrites it in the line with '0's before
// the JSON parser runs, so the parser's own buffers never hold a key; the
// decoded key goes straight into crypto::SecretBytes.
#pragma once

#include <string>
#include <string_view>

#include "control/control_ops.h"
#include "control/control_server.h"

namespace espgw::control {

class JsonCodec {
 public:
  static constexpr int kMaxDepth = 16;  // objects/arrays, outside strings

  explicit JsonCodec(ControlOps& ops) : ops_(ops) {}

  // Serves one request line. Overwrites the key's text in `line`.
  ControlReply handle_line(WipingString& line) noexcept;

  // What the pre-scan found: why the line is refused before parsing (NUL
  // byte, nesting too deep, ...; empty when it may be parsed) and where the
  // top-level "key" string's text is.
  struct Prescan {
    std::string error;
    size_t key_pos = std::string_view::npos, key_len = 0;
  };
  static Prescan prescan(std::string_view line);

 private:
  nlohmann::json dispatch(nlohmann::json& req, const WipingString* key_text, bool& subscribe);
  ControlOps& ops_;
};

}  // namespace espgw::control
