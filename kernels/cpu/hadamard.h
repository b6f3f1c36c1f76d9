#pragma once
/// Randomized Hadamard rotation of head_dim vectors (QuaRot, arXiv 2404.00456; llama.cpp's rotated KV cache):
///   R x = H_B (D x),   R^T y = D (H_B y),
/// D = diag(s), s ∈ {±1}^d a seeded sign vector, H_B the block-diagonal normalized Walsh–Hadamard matrix with
/// blocks of B = the largest power of two dividing d (d = 128 -> one block of 128; d = 96 -> three blocks of
/// 32; d = 40 -> five of 8; odd d -> B = 1, where R is the sign flip alone). Blocked rather than padded:
/// padding 96 to 128 would quantize and store 33% more coordinates, while blocks keep R orthogonal on R^d
/// with no extra storage; the price is that mixing spans B channels, not d. H_B/√B is symmetric and
/// orthogonal, so R is orthogonal and <R q, R k> = <q, k>: quantizing R k and R v, scoring with R q and
/// un-rotating the output (o = R^T Σ p·R v) leaves exact attention unchanged and spreads outlier channels.
/// The transform runs in float64 (fast Walsh–Hadamard butterflies, d·log2(B) adds) and rounds once to
/// float; the codecs' naive references apply the dense matrix instead (codecs/common/rotation.cpp), and both
/// round the same float64 value, so CPU and reference encode identical rotated inputs.
#include <cstdint>
#include <vector>

namespace kvb::kernels::hadamard {

/// B: the largest power of two dividing d (d >= 1).
int block_size(int d);

/// The seeded sign vector s[d] ∈ {+1, -1} (kvb::Rng; independent per seed).
std::vector<int8_t> signs(int d, uint64_t seed);

/// In place: x[d] <- H_B x, normalized (each block's butterflies, then 1/√B).
void fwht_blocks(double* x, int d, int block);

/// y[n·d] = R x[n·d] row by row (y may alias x).
void rotate_rows(const float* x, float* y, int64_t n, int d, const int8_t* s);
/// x[n·d] = R^T y[n·d] row by row (x may alias y).
void unrotate_rows(const float* y, float* x, int64_t n, int d, const int8_t* s);

}  // namespace kvb::kernels::hadamard
