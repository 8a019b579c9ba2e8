// The instruction sets the kernels are built for, and the choice of one per process.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace longhaul::kernels {

// kAmx is kAvx512 plus the AMX-INT8 tile kernels for long batches (prompt processing); it needs VBMI and BITALG as
// well, and the OS's permission for the tile state, which cpu_supports(kAmx) requests.
enum class Isa { kGeneric, kAvx2, kAvx512, kAmx };

// The ISA every kernel call uses, chosen on first use: default_isa(), or the one the environment variable
// LONGHAUL_ISA (generic | avx2 | avx512 | amx) forces. Forcing an ISA the CPU lacks, or an unknown value,
// prints a one-line error naming it and exits with status 1. Thread-safe (function-local static).
Isa active_isa();
const char* isa_name(Isa isa);
// The best ISA this CPU supports (amx included: its prompt kernels follow the token's kind, isa.cc says why).
Isa default_isa();
// Parses a LONGHAUL_ISA value; nullopt for an unknown name.
std::optional<Isa> parse_isa(std::string_view name);
// The ISA active_isa() picks for a LONGHAUL_ISA value (nullptr or "" = not set: default_isa()), or the
// one-line error it prints before exiting: an unknown name, or an ISA this CPU lacks.
Result<Isa> resolve_isa(const char* forced);
// Whether this CPU (and OS) can run code built for `isa`.
bool cpu_supports(Isa isa);
// Every ISA this CPU can run, generic first; tests loop over it.
std::vector<Isa> supported_isas();

}  // namespace longhaul::kernels
