// ISA selection: the best ISA the CPU supports, chosen once; LONGHAUL_ISA overrides it for tests and benchmarks.
#include <cstdio>
#include <cstdlib>
#include <string>

#if defined(__linux__) && (defined(__x86_64__) || defined(__i386__))
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "kernels/quant.h"

namespace longhaul::kernels {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kGeneric: return "generic";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kAmx: return "amx";
  }
  return "unknown";
}

std::optional<Isa> parse_isa(std::string_view name) {
  for (Isa isa : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512, Isa::kAmx}) {
    if (name == isa_name(isa)) return isa;
  }
  return std::nullopt;
}

namespace {
// Linux hands out the AMX tile state (8 KiB per thread) only to processes that ask for it, once.
bool amx_permitted() {
#if defined(__linux__) && (defined(__x86_64__) || defined(__i386__))
  static const bool permitted = [] {
    constexpr long kArchReqXcompPerm = 0x1023;
    constexpr long kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return permitted;
#else
  return false;
#endif
}
}  // namespace

bool cpu_supports(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  // __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0), so a "yes" is safe to run.
  switch (isa) {
    case Isa::kGeneric: return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
             __builtin_cpu_supports("bmi2");
    case Isa::kAvx512:
      return cpu_supports(Isa::kAvx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512vnni");
    case Isa::kAmx:
      return cpu_supports(Isa::kAvx512) && __builtin_cpu_supports("avx512vbmi") &&
             __builtin_cpu_supports("avx512bitalg") && __builtin_cpu_supports("amx-tile") &&
             __builtin_cpu_supports("amx-int8") && __builtin_cpu_supports("amx-bf16") &&
             __builtin_cpu_supports("avx512bf16") && amx_permitted();
  }
  return false;
#else
  return isa == Isa::kGeneric;
#endif
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> isas;
  for (Isa isa : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512, Isa::kAmx}) {
    if (cpu_supports(isa)) isas.push_back(isa);
  }
  return isas;
}

Isa default_isa() {
  // The best the CPU has. amx is avx512 plus AMX-BF16 tiles for prompt rows (2.3-2.8x the VNNI kernels on a
  // 512-token chunk: docs/benchmarks.md, "Prompt products on AMX tiles in bf16"); its decode kernels are avx512's.
  const std::vector<Isa> isas = supported_isas();
  return isas.back();
}

Result<Isa> resolve_isa(const char* forced) {
  if (forced == nullptr || forced[0] == '\0') return default_isa();
  const std::optional<Isa> isa = parse_isa(forced);
  if (!isa) return Status::error(std::string("LONGHAUL_ISA='") + forced + "' is not one of generic, avx2, avx512, amx");
  if (!cpu_supports(*isa)) {
    return Status::error(std::string("LONGHAUL_ISA='") + forced + "' forces an ISA this CPU does not support");
  }
  return *isa;
}

namespace {
Isa choose_isa() {
  Result<Isa> isa = resolve_isa(std::getenv("LONGHAUL_ISA"));
  if (!isa) {
    std::fprintf(stderr, "longhaul: %s\n", isa.message().c_str());
    std::exit(1);
  }
  return *isa;
}
}  // namespace

Isa active_isa() {
  static const Isa isa = choose_isa();
  return isa;
}

}  // namespace longhaul::kernels
