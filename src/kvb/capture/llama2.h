#pragma once
/// A llama2.c checkpoint (legacy "version 0" format) and a float32 forward pass that matches
/// llama2.c `run.c` operation for operation: RMSNorm (eps 1e-5), RoPE on adjacent pairs (2i, 2i+1)
/// with freq = 1 / 10000^(2i / head_size), grouped-query attention (query head h reads KV head
/// h / (n_heads / n_kv_heads)), softmax scale 1/sqrt(head_size), SwiGLU FFN, final RMSNorm and a
/// classifier shared with the token embedding when vocab_size > 0 in the header.
///
/// The runner keeps run.c's KV cache ([layer][pos][kv_dim], keys post-RoPE) and, for the last
/// forward() call, every layer's post-RoPE query and attention output (before wo), so a recorder
/// can store exactly what the model computed.
#include <cstdint>
#include <string>
#include <vector>

namespace kvb {

struct Llama2Config {
  int dim = 0;
  int hidden_dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;  ///< always positive here; `shared_classifier` keeps the header's sign
  int seq_len = 0;
  bool shared_classifier = true;
  int head_size() const { return dim / n_heads; }
  int kv_dim() const { return dim / n_heads * n_kv_heads; }
  int kv_mul() const { return n_heads / n_kv_heads; }
};

/// Weights of a legacy llama2.c checkpoint, in the file's layout.
class Llama2Model {
 public:
  /// Reads and validates `path`: the header must describe a consistent model and the file length must
  /// equal the header's expected size. Missing, short or garbled files throw DataError naming the file
  /// and the expected vs found bytes.
  static Llama2Model load(const std::string& path);

  const Llama2Config& config() const { return cfg_; }
  const std::string& path() const { return path_; }

  // Weight views (row-major, as in the file).
  const float* token_embedding() const { return w_.data() + off_.tok; }  ///< [vocab, dim]
  const float* rms_att(int l) const;   ///< [dim]
  const float* wq(int l) const;        ///< [dim, dim]
  const float* wk(int l) const;        ///< [kv_dim, dim]
  const float* wv(int l) const;        ///< [kv_dim, dim]
  const float* wo(int l) const;        ///< [dim, dim]
  const float* rms_ffn(int l) const;   ///< [dim]
  const float* w1(int l) const;        ///< [hidden, dim]
  const float* w2(int l) const;        ///< [dim, hidden]
  const float* w3(int l) const;        ///< [hidden, dim]
  const float* rms_final() const { return w_.data() + off_.rms_final; }  ///< [dim]
  const float* wcls() const { return w_.data() + off_.wcls; }            ///< [vocab, dim]

 private:
  struct Offsets {
    size_t tok = 0, rms_att = 0, wq = 0, wk = 0, wv = 0, wo = 0, rms_ffn = 0, w1 = 0, w2 = 0, w3 = 0,
           rms_final = 0, wcls = 0;
  };
  std::string path_;
  Llama2Config cfg_;
  Offsets off_;
  std::vector<float> w_;  ///< every float after the header
};

class Llama2Runner;

/// Replaces run.c's attention of one layer at one position (kvbench e2e: a compressed prompt merged with the
/// exact continuation). Called after the layer's key and value at `pos` are in the runner's cache: q is the
/// post-RoPE query of every head [dim] (head h at h * head_size); write the attention output [dim] (before
/// wo) into out.
class AttentionHook {
 public:
  virtual ~AttentionHook() = default;
  virtual void attend(const Llama2Runner& runner, int layer, int pos, const float* q, float* out) = 0;
};

/// How the runner's matrix-vector products sum: in run.c's order (capture: what llama2.c computes, bit for
/// bit), or with the CPU's SIMD dot product (kernels/cpu/row_kernels.h; e2e, where the exact and the compressed
/// runs both use it, so only the cache differs between them). The two differ by float reassociation.
enum class Matvec { kRunC, kSimd };

/// run.c's RunState and forward(): one token at a time, positions 0, 1, 2, ...
class Llama2Runner {
 public:
  explicit Llama2Runner(const Llama2Model& model, Matvec matvec = Matvec::kRunC);

  /// Runs token `token` at position `pos` (0 <= pos < seq_len, positions in order) and returns the
  /// logits [vocab]. Throws UsageError for an out-of-range token or position. With a hook, every layer's
  /// attention is the hook's (the rest of the forward pass is unchanged).
  const float* forward(int token, int pos, AttentionHook* hook = nullptr);

  /// Runs tokens[0..n) at positions 0..n-1 as one batch, layer by layer (the prompt of kvbench e2e): the same
  /// layer code as forward(), with the matrix products over all n tokens at once in Matvec::kSimd mode
  /// (kernels' dots_many: each weight row read once per block of tokens, not once per token), attention
  /// through `hook` (run.c's when null) at each position, and no classifier. The cache then holds positions
  /// 0..n-1 as n forward() calls would leave it, to float reassociation. UsageError for bad tokens or n.
  void prefill(const int32_t* tokens, int n, AttentionHook* hook);

  const Llama2Config& config() const { return c_; }
  /// The last forward()'s final hidden state (after the final RMSNorm, before the classifier): [dim].
  const float* hidden() const { return x_.data(); }
  /// Copies positions [0, n) of every layer's key and value cache from `other` (same model): a prefill run
  /// once and continued by several decoders.
  void copy_cache_from(const Llama2Runner& other, int n);

  /// Post-RoPE keys / values of layer l at position p: [kv_dim] (head g at offset g * head_size).
  const float* key(int l, int p) const;
  const float* value(int l, int p) const;
  /// The last forward()'s post-RoPE query of layer l: [dim] (head h at offset h * head_size).
  const float* query(int l) const;
  /// The last forward()'s attention output of layer l before wo: [dim] (head h at h * head_size).
  const float* attn_out(int l) const;

 private:
  void matmul(float* xout, const float* x, const float* w, int n, int d) const;
  /// run.c's RoPE of query q [dim] and key k [kv_dim] at position pos, in place.
  void rope(float* q, float* k, int pos) const;
  /// xout[t, 0..d) = W (d, n) @ x[t, 0..n) for T rows of x (row-major [T, n] -> [T, d]): per row (matmul) for
  /// one token or in run.c mode, else blocked over tokens.
  void matmul_rows(float* xout, const float* x, const float* w, int n, int d, int T) const;
  /// The layers for tokens[0..n) at positions pos0..pos0+n-1 (forward: n = 1; prefill: pos0 = 0); x_ ends as
  /// the n residual streams, the cache filled at those positions.
  void run_layers(const int32_t* tokens, int n, int pos0, AttentionHook* hook);
  /// run.c's attention of layer l at position pos for the query q [dim] of every head into out [dim].
  void runc_attention(int l, int pos, const float* q, float* out);

  const Llama2Model& m_;
  Llama2Config c_;
  Matvec matvec_;
  std::vector<float> x_, xb_, xb2_, hb_, hb2_, q_, att_, logits_;  ///< activations: [n, ...] rows of the batch
  std::vector<float> key_cache_, value_cache_;  ///< [L, seq_len, kv_dim]
  std::vector<float> last_q_, last_att_out_;    ///< [L, dim]
};

/// Index of the largest value (the first one on ties), as run.c's sample_argmax.
int argmax(const float* x, int n);

}  // namespace kvb
