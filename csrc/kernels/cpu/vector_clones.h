// ZCOLL_VECTOR_CLONES: build a CPU loop for AVX-512, AVX2 and the baseline, picked at load time
// (GCC's target_clones), so one wheel runs everywhere and uses the widest vectors the CPU has.
// The loops it marks do the same IEEE operations element by element at any width (no
// contraction: the build has -ffp-contract=off, no fast-math), so every clone gives the same bits.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#define ZCOLL_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ZCOLL_VECTOR_CLONES
#endif
