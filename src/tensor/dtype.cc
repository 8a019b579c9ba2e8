#include "tensor/dtype.h"

#include "base/status.h"

namespace longhaul::tensor {

namespace {
constexpr DTypeInfo kTypes[] = {
    {DType::F32, "f32", 1, 4, false},      {DType::F16, "f16", 1, 2, false},
    {DType::BF16, "bf16", 1, 2, false},    {DType::Q4_0, "q4_0", 32, 18, true},
    {DType::Q4_1, "q4_1", 32, 20, true},   {DType::Q5_0, "q5_0", 32, 22, true},
    {DType::Q5_1, "q5_1", 32, 24, true},   {DType::Q8_0, "q8_0", 32, 34, true},
    {DType::Q8_1, "q8_1", 32, 36, true},   {DType::Q2_K, "q2_K", 256, 84, true},
    {DType::Q3_K, "q3_K", 256, 110, true}, {DType::Q4_K, "q4_K", 256, 144, true},
    {DType::Q5_K, "q5_K", 256, 176, true}, {DType::Q6_K, "q6_K", 256, 210, true},
    {DType::Q8_K, "q8_K", 256, 292, true},
};
}  // namespace

std::optional<DTypeInfo> dtype_info(uint32_t gguf_type_id) {
  for (const auto& t : kTypes)
    if (static_cast<uint32_t>(t.type) == gguf_type_id) return t;
  return std::nullopt;
}

const DTypeInfo& info(DType type) {
  for (const auto& t : kTypes)
    if (t.type == type) return t;
  LH_CHECK_MSG(false, "unknown DType " + std::to_string(static_cast<uint32_t>(type)));
}

std::string gguf_type_name(uint32_t id) {
  if (auto i = dtype_info(id)) return i->name;
  // Types GGUF defines that longhaul does not run (yet); named so the error is useful.
  static const char* const kOther[] = {nullptr,  nullptr,   nullptr,   nullptr,  "q4_2",   "q4_3",
                                       nullptr,  nullptr,   nullptr,   nullptr,  nullptr,  nullptr,
                                       nullptr,  nullptr,   nullptr,   nullptr,  "iq2_xxs", "iq2_xs",
                                       "iq3_xxs", "iq1_s",  "iq4_nl",  "iq3_s",  "iq2_s",  "iq4_xs",
                                       "i8",     "i16",     "i32",     "i64",    "f64",    "iq1_m",
                                       nullptr,  "q4_0_4_4", "q4_0_4_8", "q4_0_8_8", "tq1_0", "tq2_0",
                                       "iq4_nl_4_4", "iq4_nl_4_8", "iq4_nl_8_8", "mxfp4"};
  if (id < sizeof(kOther) / sizeof(kOther[0]) && kOther[id] != nullptr) return kOther[id];
  return "type " + std::to_string(id);
}

}  // namespace longhaul::tensor
