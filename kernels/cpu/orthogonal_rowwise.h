#pragma once
/// The seeded Haar-random orthogonal matrix of kernels/cpu/orthogonal.h, computed with row-major loops.
///
/// orthogonal::haar_orthogonal walks the columns of its row-major matrices in its inner loops (stride d), which
/// costs ~43 s at d = 1024 on one core. haar_orthogonal_rowwise performs exactly the same floating-point
/// operations in the same order for every element — each Householder dot product is still accumulated over
/// the rows i ascending, each update is the same expression — but keeps d partial dot products at once so that
/// the inner loops run along rows (~1 s at d = 1024). Its result equals haar_orthogonal(d, seed) bit for bit
/// (tests/codecs/polar_test.cpp checks it at several d); it is a separate file only so that the shared
/// orthogonal.cpp is not edited while other families use it (it could replace that body).
#include <cstdint>
#include <vector>

namespace kvb::kernels::orthogonal {

/// haar_orthogonal(d, seed), bit for bit, row-major loops.
std::vector<double> haar_orthogonal_rowwise(int d, uint64_t seed);

}  // namespace kvb::kernels::orthogonal
