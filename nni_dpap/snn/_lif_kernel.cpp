// Fused multi-step LIF / PLIF neuron, forward and backward (see nni_dpap/snn/fused.py for the design), and
// the 2x2 average pooling that follows the neurons in spiking conv nets (nni_dpap/snn/pooling.py).
//
// Plain C++17 with a C ABI, no torch headers: it compiles in under a minute (GCC -O3: ~40 s) and is called
// through ctypes.
// Layout: x, s, h, grad are [T, B, L] (time-major, contiguous); gate is [T, L] (the time mask expanded over
// the per-sample features) or null. Every (sample, chunk of <= kBlock features) is one independent work item
// that keeps its membrane (or its gradient w.r.t. the membrane) in a small stack array and runs the T loop
// over it, so each element is read and written once per step and the inner loop vectorises.
//
// The arithmetic mirrors nni_dpap.snn.neurons operation by operation (the same roundings, no FMA
// contraction: -ffp-contract=off), so the forward pass is bit-identical to the Python loop.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kBlock = 512;
constexpr int64_t kRun = 256;  // outputs per run of the max pooling's inner loop
constexpr double kPi = 3.14159265358979323846;  // == Python's math.pi

struct Params {
  int64_t T, B, L;
  double k;      // LIF: tau (divide); PLIF: sigmoid(w) (multiply)
  double vth, vr;
  double alpha;  // surrogate sharpness
  int threads;
};

template <typename F, bool MUL>
inline F charge(F v, F x, F k, F vr) {
  if (MUL) return v + (x - (v - vr)) * k;  // PLIFNeuron.neuronal_charge
  return v + (x - (v - vr)) / k;           // LIFNeuron.neuronal_charge
}

template <typename F, bool GATE>
inline F fire(F h, F vth, const F* g, int64_t j) {
  F s = (h - vth) >= F(0) ? F(1) : F(0);  // _HeavisideSpike.forward(h - v_threshold)
  if (GATE) s = s * g[j];                 // BaseNeuron._gate
  return s;
}

template <typename F>
inline F hard_reset(F h, F s, F vr) {
  return h * (F(1) - s) + vr * s;  // BaseNeuron.neuronal_reset
}

template <typename F, bool SIGMOID>
inline F surrogate_grad(F z, F alpha, F c1, F c2) {
  if (SIGMOID) {  // SigmoidSurrogate.derivative: alpha * sig * (1 - sig)
    const F sig = F(1) / (F(1) + std::exp(-(alpha * z)));
    return alpha * sig * (F(1) - sig);
  }
  const F y = c1 * z;  // ATanSurrogate.derivative: (alpha / 2) / (1 + (pi / 2 * alpha * z)^2)
  return F(1) / (F(1) + y * y) * c2;
}

template <typename F, bool MUL, bool GATE, bool WRITE_H>
void forward_item(const F* x, const F* gate, F* s, F* h, const Params& p, int64_t off, int64_t j0, int64_t n) {
  const F k = F(p.k), vth = F(p.vth), vr = F(p.vr);
  const int64_t N = p.B * p.L;
  F v[kBlock];
  for (int64_t j = 0; j < n; ++j) v[j] = vr;
  for (int64_t t = 0; t < p.T; ++t) {
    const F* xt = x + t * N + off;
    const F* gt = GATE ? gate + t * p.L + j0 : nullptr;
    F* st = s + t * N + off;
    F* ht = WRITE_H ? h + t * N + off : nullptr;
    for (int64_t j = 0; j < n; ++j) {
      const F hj = charge<F, MUL>(v[j], xt[j], k, vr);
      const F sj = fire<F, GATE>(hj, vth, gt, j);
      if (WRITE_H) ht[j] = hj;
      st[j] = sj;
      v[j] = hard_reset(hj, sj, vr);
    }
  }
}

template <typename F, bool MUL, bool GATE, bool SIGMOID, bool DETACH, bool GRAD_K>
double backward_item(const F* gs, const F* h, const F* x, const F* gate, F* gx, const Params& p, int64_t off,
                     int64_t j0, int64_t n) {
  const F k = F(p.k), vth = F(p.vth), vr = F(p.vr), alpha = F(p.alpha);
  const F c1 = F(kPi / 2 * p.alpha), c2 = F(p.alpha / 2);
  const int64_t N = p.B * p.L;
  F gv[kBlock];  // dL/dV[t], flowing backwards in time
  F acc_k[kBlock];  // dL/dk per element, summed over the steps (vectorises; summed in double at the end)
  F rest[kBlock];   // stands for H[-1]: the reset of V_reset is V_reset whether it fires or not
  for (int64_t j = 0; j < n; ++j) {
    gv[j] = F(0);
    acc_k[j] = F(0);
    rest[j] = vr;
  }
  for (int64_t t = p.T - 1; t >= 0; --t) {
    const F* ht = h + t * N + off;
    const F* gst = gs + t * N + off;
    const F* gt = GATE ? gate + t * p.L + j0 : nullptr;
    const F* hp = t > 0 ? h + (t - 1) * N + off : rest;
    const F* gp = (GATE && t > 0) ? gate + (t - 1) * p.L + j0 : gt;
    const F* xt = GRAD_K ? x + t * N + off : nullptr;
    F* gxt = gx + t * N + off;
#pragma GCC ivdep  // gx, h, gs, x and the stack arrays do not overlap
    for (int64_t j = 0; j < n; ++j) {
      const F hj = ht[j];
      const F z = hj - vth;
      const F sj = fire<F, GATE>(hj, vth, gt, j);
      F gsj = gst[j];  // dL/dS[t]: the output's gradient, plus the reset's unless it is detached
      if (!DETACH) gsj = gsj + (gv[j] * vr - gv[j] * hj);
      const F graw = GATE ? gsj * gt[j] : gsj;
      const F gh = gv[j] * (F(1) - sj) + graw * surrogate_grad<F, SIGMOID>(z, alpha, c1, c2);
      if (GRAD_K) {  // dH/dk = X - (V[t-1] - V_reset), V[t-1] recomputed from H[t-1]
        const F vp = hard_reset(hp[j], fire<F, GATE>(hp[j], vth, gp, j), vr);
        acc_k[j] = acc_k[j] + gh * (xt[j] - (vp - vr));
      }
      const F ga = MUL ? gh * k : gh / k;  // dL/dX[t]
      gxt[j] = ga;
      gv[j] = gh - ga;  // dL/dV[t-1] = gh * (1 - k)
    }
  }
  double acc = 0.0;  // in a fixed order: deterministic
  if (GRAD_K) {
    for (int64_t j = 0; j < n; ++j) acc += double(acc_k[j]);
  }
  return acc;
}

// Work items: B samples x ceil(L / kBlock) chunks.
inline int64_t chunks(const Params& p) { return (p.L + kBlock - 1) / kBlock; }

template <typename F, bool MUL, bool GATE, bool WRITE_H>
void forward_all(const F* x, const F* gate, F* s, F* h, const Params& p) {
  const int64_t per = chunks(p), items = p.B * per;
#pragma omp parallel for schedule(static) num_threads(p.threads) if (p.threads > 1)
  for (int64_t i = 0; i < items; ++i) {
    const int64_t b = i / per, j0 = (i % per) * kBlock;
    forward_item<F, MUL, GATE, WRITE_H>(x, gate, s, h, p, b * p.L + j0, j0, std::min(kBlock, p.L - j0));
  }
}

template <typename F, bool MUL, bool GATE, bool SIGMOID, bool DETACH, bool GRAD_K>
double backward_all(const F* gs, const F* h, const F* x, const F* gate, F* gx, const Params& p) {
  const int64_t per = chunks(p), items = p.B * per;
  std::vector<double> partial(GRAD_K ? items : 0);
#pragma omp parallel for schedule(static) num_threads(p.threads) if (p.threads > 1)
  for (int64_t i = 0; i < items; ++i) {
    const int64_t b = i / per, j0 = (i % per) * kBlock;
    const double a = backward_item<F, MUL, GATE, SIGMOID, DETACH, GRAD_K>(gs, h, x, gate, gx, p, b * p.L + j0, j0,
                                                                          std::min(kBlock, p.L - j0));
    if (GRAD_K) partial[i] = a;
  }
  double total = 0.0;  // summed in a fixed order: deterministic for any number of threads
  for (double a : partial) total += a;
  return total;
}

// Turns runtime flags into template arguments.
template <typename Fn>
void with_flag(bool flag, Fn&& fn) {
  if (flag) {
    fn(std::true_type{});
  } else {
    fn(std::false_type{});
  }
}

template <typename F>
void forward_typed(const void* x, const void* gate, void* s, void* h, const Params& p, bool mul) {
  with_flag(mul, [&](auto M) {
    with_flag(gate != nullptr, [&](auto G) {
      with_flag(h != nullptr, [&](auto W) {
        forward_all<F, decltype(M)::value, decltype(G)::value, decltype(W)::value>(
            static_cast<const F*>(x), static_cast<const F*>(gate), static_cast<F*>(s), static_cast<F*>(h), p);
      });
    });
  });
}

template <typename F>
double backward_typed(const void* gs, const void* h, const void* x, const void* gate, void* gx, const Params& p,
                      bool mul, bool sigmoid, bool detach, bool grad_k) {
  double result = 0.0;
  with_flag(mul, [&](auto M) {
    with_flag(gate != nullptr, [&](auto G) {
      with_flag(sigmoid, [&](auto S) {
        with_flag(detach, [&](auto D) {
          with_flag(grad_k && mul, [&](auto K) {
            result = backward_all<F, decltype(M)::value, decltype(G)::value, decltype(S)::value, decltype(D)::value,
                                  decltype(K)::value>(static_cast<const F*>(gs), static_cast<const F*>(h),
                                                      static_cast<const F*>(x), static_cast<const F*>(gate),
                                                      static_cast<F*>(gx), p);
          });
        });
      });
    });
  });
  return result;
}

// 2x2 average pooling, stride 2, no padding, floor mode, over P contiguous H x W planes (NCHW). The sum is
// taken in ATen's order (row by row, left to right) and divided by 4, so the result is bit-identical to
// torch.nn.functional.avg_pool2d(x, 2). Backward writes gx = gy / 4 on each window and 0 on the odd row or
// column that floor mode leaves out, as ATen's avg_pool2d_backward does.
template <typename F>
void pool_forward(const F* x, F* y, int64_t P, int64_t H, int64_t W, int threads) {
  const int64_t OH = H / 2, OW = W / 2;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t p = 0; p < P; ++p) {
    const F* plane = x + p * H * W;
    F* out = y + p * OH * OW;
    for (int64_t oh = 0; oh < OH; ++oh) {
      const F* r0 = plane + 2 * oh * W;
      const F* r1 = r0 + W;
      F* o = out + oh * OW;
      for (int64_t ow = 0; ow < OW; ++ow) {
        o[ow] = (((r0[2 * ow] + r0[2 * ow + 1]) + r1[2 * ow]) + r1[2 * ow + 1]) / F(4);
      }
    }
  }
}

template <typename F>
void pool_backward(const F* gy, F* gx, int64_t P, int64_t H, int64_t W, int threads) {
  const int64_t OH = H / 2, OW = W / 2;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t p = 0; p < P; ++p) {
    const F* g = gy + p * OH * OW;
    F* plane = gx + p * H * W;
    for (int64_t ih = 0; ih < H; ++ih) {
      F* row = plane + ih * W;
      if (ih / 2 >= OH) {
        std::fill(row, row + W, F(0));
        continue;
      }
      const F* go = g + (ih / 2) * OW;
      for (int64_t ow = 0; ow < OW; ++ow) {
        const F v = go[ow] / F(4);
        row[2 * ow] = v;
        row[2 * ow + 1] = v;
      }
      if (W & 1) row[W - 1] = F(0);
    }
  }
}

// Direct-encoded neuron (nni_dpap/snn/direct.py): the input current x[b, c, :] is the same at every step
// (DirectEncoder), so it is read once per work item instead of T times from a T-fold copy. x is [B, C, S]
// (S = H * W), gate is [T, C] or null. Without pooling the spikes are written as [T, B, C, S]; with 2x2
// pooling (H, W given) only the pooled spike rates [T, B, C, H/2, W/2] are written, and the rows and
// columns that floor mode leaves out are not computed (nothing reads them). Backward recomputes the
// membrane from x (cheap: the input is static) into a per-thread buffer instead of saving H, and sums
// dL/dX over the T steps, which is the encoder's backward.
struct DirectShape {
  int64_t B, C, S, H, W;  // H = W = 0: no pooling
  bool pool() const { return H > 0; }
  int64_t OH() const { return H / 2; }
  int64_t OW() const { return W / 2; }
  // Work items per (b, c) plane: chunks of <= kBlock elements, or groups of row pairs when pooling.
  int64_t rows_per_item() const { return std::max<int64_t>(1, kBlock / std::max<int64_t>(1, 2 * 2 * OW())); }
  int64_t per_plane() const {
    if (pool()) return (OH() + rows_per_item() - 1) / rows_per_item();
    return (S + kBlock - 1) / kBlock;
  }
};

// The elements of one work item: n membrane slots over a run of the plane (see direct_copy).
struct DirectItem {
  int64_t b, c, first;  // first: element (no pool) or output row (pool) where the item starts
  int64_t n;            // slots
  int64_t rows;         // pool: output rows in the item
};

inline DirectItem direct_item(const DirectShape& d, int64_t i) {
  const int64_t per = d.per_plane(), plane = i / per, part = i % per;
  DirectItem it{plane / d.C, plane % d.C, 0, 0, 0};
  if (d.pool()) {
    it.first = part * d.rows_per_item();
    it.rows = std::min(d.rows_per_item(), d.OH() - it.first);
    it.n = it.rows * 4 * d.OW();
  } else {
    it.first = part * kBlock;
    it.n = std::min(kBlock, d.S - it.first);
  }
  return it;
}

// Slot j of a pooled item covers output (row r, column q) and window element e (0..3, ATen's summation
// order: (0,0), (0,1), (1,0), (1,1)); slots are laid out [row][e][column] (j = (4 r + e) OW + q) so that the
// pooled sum reads four contiguous runs of OW slots. Copies between the plane and the slots:
template <typename F, bool TO_SLOTS>
inline void direct_copy(const DirectShape& d, const DirectItem& it, F* plane, F* slots) {
  if (!d.pool()) {
    for (int64_t j = 0; j < it.n; ++j) {
      if (TO_SLOTS) slots[j] = plane[it.first + j]; else plane[it.first + j] = slots[j];
    }
    return;
  }
  const int64_t OW = d.OW();
  for (int64_t r = 0; r < it.rows; ++r) {
    for (int64_t e = 0; e < 4; ++e) {
      F* row = plane + (2 * (it.first + r) + e / 2) * d.W + e % 2;
      F* run = slots + (4 * r + e) * OW;
      for (int64_t q = 0; q < OW; ++q) {
        if (TO_SLOTS) run[q] = row[2 * q]; else row[2 * q] = run[q];
      }
    }
  }
}

template <typename F, bool MUL, bool GATE>
void direct_forward_item(const F* x, const F* gate, F* y, const Params& p, const DirectShape& d,
                         const DirectItem& it, F* v, F* xs, F* s) {
  const F k = F(p.k), vth = F(p.vth), vr = F(p.vr);
  direct_copy<F, true>(d, it, const_cast<F*>(x + (it.b * d.C + it.c) * d.S), xs);
  for (int64_t j = 0; j < it.n; ++j) v[j] = vr;
  for (int64_t t = 0; t < p.T; ++t) {
    const F* g = GATE ? gate + t * d.C + it.c : nullptr;
    for (int64_t j = 0; j < it.n; ++j) {
      const F hj = charge<F, MUL>(v[j], xs[j], k, vr);
      const F sj = fire<F, GATE>(hj, vth, g, 0);
      s[j] = sj;
      v[j] = hard_reset(hj, sj, vr);
    }
    const int64_t out_plane = ((t * d.B + it.b) * d.C + it.c);
    if (d.pool()) {
      const int64_t OW = d.OW();
      F* out = y + out_plane * d.OH() * OW + it.first * OW;
      for (int64_t r = 0; r < it.rows; ++r) {
        const F* s0 = s + r * 4 * OW;
        for (int64_t q = 0; q < OW; ++q) {
          out[r * OW + q] = (((s0[q] + s0[OW + q]) + s0[2 * OW + q]) + s0[3 * OW + q]) / F(4);
        }
      }
    } else {
      F* out = y + out_plane * d.S + it.first;
      for (int64_t j = 0; j < it.n; ++j) out[j] = s[j];
    }
  }
}

template <typename F, bool MUL, bool GATE, bool SIGMOID, bool DETACH, bool GRAD_K>
double direct_backward_item(const F* gy, const F* x, const F* gate, F* gx, const Params& p, const DirectShape& d,
                            const DirectItem& it, F* buf) {
  const F k = F(p.k), vth = F(p.vth), vr = F(p.vr), alpha = F(p.alpha);
  const F c1 = F(kPi / 2 * p.alpha), c2 = F(p.alpha / 2);
  const int64_t n = it.n;
  F* xs = buf;            // [n]: the static input
  F* gv = buf + n;        // [n]: dL/dV[t], flowing backwards in time
  F* acc_x = buf + 2 * n;  // [n]: dL/dX summed over the steps
  // [1 + T][n]: the membrane before firing, recomputed, after a row of V_reset standing for H[-1]: the
  // reset of V_reset is V_reset whether it fires or not, so V[t-1] is read the same way at t = 0.
  F* h = buf + 4 * n;
  F* gs = buf + (4 + p.T) * n;  // [n]: dL/dS[t] from the output's gradient
  F* acc_k = buf + (5 + p.T) * n;  // [n]: dL/dk per slot, summed over the steps (vectorises; see the end)
  direct_copy<F, true>(d, it, const_cast<F*>(x + (it.b * d.C + it.c) * d.S), xs);
  for (int64_t j = 0; j < n; ++j) {
    gv[j] = vr;  // (V[-1] = V_reset, reused as the running membrane below)
    h[j - n] = vr;
  }
  for (int64_t t = 0; t < p.T; ++t) {  // forward again: H[t] for every step
    const F* g = GATE ? gate + t * d.C + it.c : nullptr;
    F* ht = h + t * n;
    for (int64_t j = 0; j < n; ++j) {
      const F hj = charge<F, MUL>(gv[j], xs[j], k, vr);
      ht[j] = hj;
      gv[j] = hard_reset(hj, fire<F, GATE>(hj, vth, g, 0), vr);
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    gv[j] = F(0);
    acc_x[j] = F(0);
    acc_k[j] = F(0);
  }
  const int64_t OW = d.OW();
  for (int64_t t = p.T - 1; t >= 0; --t) {
    const F* ht = h + t * n;
    const F* g = GATE ? gate + t * d.C + it.c : nullptr;
    const F* gp = (GRAD_K && GATE) ? (t > 0 ? gate + (t - 1) * d.C + it.c : g) : nullptr;
    const int64_t out_plane = ((t * d.B + it.b) * d.C + it.c);
    // dL/dS[t]: the pooling's backward (dL/dY / 4 on each element of the window) or the output's gradient
    if (d.pool()) {
      const F* gyt = gy + out_plane * d.OH() * OW + it.first * OW;
      for (int64_t r = 0; r < it.rows; ++r) {
        for (int64_t q = 0; q < OW; ++q) {
          const F gq = gyt[r * OW + q] / F(4);
          for (int64_t e = 0; e < 4; ++e) gs[(4 * r + e) * OW + q] = gq;
        }
      }
    } else {
      const F* gyt = gy + out_plane * d.S + it.first;
      for (int64_t j = 0; j < n; ++j) gs[j] = gyt[j];
    }
#pragma GCC ivdep  // the slots are disjoint ranges of one buffer: no dependence between iterations
    for (int64_t j = 0; j < n; ++j) {
      const F hj = ht[j];
      const F z = hj - vth;
      const F sj = fire<F, GATE>(hj, vth, g, 0);
      F gsj = gs[j];
      if (!DETACH) gsj = gsj + (gv[j] * vr - gv[j] * hj);
      const F graw = GATE ? gsj * g[0] : gsj;
      const F gh = gv[j] * (F(1) - sj) + graw * surrogate_grad<F, SIGMOID>(z, alpha, c1, c2);
      if (GRAD_K) {  // dH/dk = X - (V[t-1] - V_reset)
        const F vp = hard_reset(ht[j - n], fire<F, GATE>(ht[j - n], vth, gp, 0), vr);
        acc_k[j] = acc_k[j] + gh * (xs[j] - (vp - vr));
      }
      const F ga = MUL ? gh * k : gh / k;
      acc_x[j] = acc_x[j] + ga;
      gv[j] = gh - ga;
    }
  }
  direct_copy<F, false>(d, it, gx + (it.b * d.C + it.c) * d.S, acc_x);
  double acc = 0.0;  // the slots' sums in double, in a fixed order
  if (GRAD_K) {
    for (int64_t j = 0; j < n; ++j) acc += double(acc_k[j]);
  }
  return acc;
}

template <typename F, bool MUL, bool GATE>
void direct_forward_all(const F* x, const F* gate, F* y, const Params& p, const DirectShape& d) {
  const int64_t items = d.B * d.C * d.per_plane();
#pragma omp parallel num_threads(p.threads) if (p.threads > 1)
  {
    std::vector<F> scratch;  // per thread: v, xs and s of one item
#pragma omp for schedule(static)
    for (int64_t i = 0; i < items; ++i) {
      const DirectItem it = direct_item(d, i);
      if (static_cast<int64_t>(scratch.size()) < 3 * it.n) scratch.resize(3 * it.n);
      direct_forward_item<F, MUL, GATE>(x, gate, y, p, d, it, scratch.data(), scratch.data() + it.n,
                                        scratch.data() + 2 * it.n);
    }
  }
}

template <typename F, bool MUL, bool GATE, bool SIGMOID, bool DETACH, bool GRAD_K>
double direct_backward_all(const F* gy, const F* x, const F* gate, F* gx, const Params& p, const DirectShape& d) {
  const int64_t items = d.B * d.C * d.per_plane();
  std::vector<double> partial(GRAD_K ? items : 0);
  if (d.pool()) {  // the rows and columns that floor mode leaves out get no gradient
    const int64_t planes = d.B * d.C;
#pragma omp parallel for schedule(static) num_threads(p.threads) if (p.threads > 1)
    for (int64_t i = 0; i < planes; ++i) {
      F* plane = gx + i * d.S;
      if (d.H & 1) std::fill(plane + (d.H - 1) * d.W, plane + d.H * d.W, F(0));
      if (d.W & 1) {
        for (int64_t r = 0; r < d.H; ++r) plane[r * d.W + d.W - 1] = F(0);
      }
    }
  }
#pragma omp parallel num_threads(p.threads) if (p.threads > 1)
  {
    std::vector<F> buf;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < items; ++i) {
      const DirectItem it = direct_item(d, i);
      const size_t need = static_cast<size_t>((6 + p.T) * it.n);
      if (buf.size() < need) buf.resize(need);
      const double a = direct_backward_item<F, MUL, GATE, SIGMOID, DETACH, GRAD_K>(gy, x, gate, gx, p, d, it,
                                                                                  buf.data());
      if (GRAD_K) partial[i] = a;
    }
  }
  double total = 0.0;  // summed in a fixed order: deterministic for any number of threads
  for (double a : partial) total += a;
  return total;
}

// 2x2 max pooling, stride 2, no padding, floor mode, over P contiguous H x W planes (NCHW), as ATen's CPU
// kernel picks the maximum: the window scanned row by row, an element replacing the maximum if it is greater
// or NaN, starting from -inf at the first element. The window position of the maximum (0..3) is kept per
// output (one byte) for backward, which writes gx = gy there and 0 elsewhere (also on the odd row or column
// that floor mode leaves out), as ATen's max_pool2d backward does for non-overlapping windows.
template <typename F>
void max_pool_forward(const F* x, F* y, uint8_t* arg, int64_t P, int64_t H, int64_t W, int threads) {
  const int64_t OH = H / 2, OW = W / 2;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t p = 0; p < P; ++p) {
    const F* plane = x + p * H * W;
    F* out = y + p * OH * OW;
    uint8_t* a = arg + p * OH * OW;
    for (int64_t oh = 0; oh < OH; ++oh) {
      const F* r0 = plane + 2 * oh * W;
      const F* r1 = r0 + W;
      F* o = out + oh * OW;
      for (int64_t ow0 = 0; ow0 < OW; ow0 += kRun) {  // runs of outputs: the float loop vectorises, then
        const int64_t n = std::min(kRun, OW - ow0);    // the positions are narrowed to bytes
        F pos[kRun];
        for (int64_t j = 0; j < n; ++j) {  // branch-free
          const int64_t ow = ow0 + j;
          // starting from -inf, the first element always wins (or, at -inf itself, leaves the same result)
          F m = r0[2 * ow], k = F(0);
          const F v1 = r0[2 * ow + 1], v2 = r1[2 * ow], v3 = r1[2 * ow + 1];
          const bool t1 = (v1 > m) | (v1 != v1);  // (x != x: NaN)
          m = t1 ? v1 : m;
          k = t1 ? F(1) : k;
          const bool t2 = (v2 > m) | (v2 != v2);
          m = t2 ? v2 : m;
          k = t2 ? F(2) : k;
          const bool t3 = (v3 > m) | (v3 != v3);
          m = t3 ? v3 : m;
          k = t3 ? F(3) : k;
          o[ow] = m;
          pos[j] = k;
        }
        for (int64_t j = 0; j < n; ++j) a[oh * OW + ow0 + j] = static_cast<uint8_t>(pos[j]);
      }
    }
  }
}

template <typename F>
void max_pool_backward(const F* gy, const uint8_t* arg, F* gx, int64_t P, int64_t H, int64_t W, int threads) {
  const int64_t OH = H / 2, OW = W / 2;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t p = 0; p < P; ++p) {
    const F* g = gy + p * OH * OW;
    const uint8_t* a = arg + p * OH * OW;
    F* plane = gx + p * H * W;
    std::fill(plane, plane + H * W, F(0));  // (then one write per window: faster than writing all four)
    for (int64_t oh = 0; oh < OH; ++oh) {
      for (int64_t ow = 0; ow < OW; ++ow) {
        const uint8_t k = a[oh * OW + ow];
        plane[(2 * oh + k / 2) * W + 2 * ow + k % 2] = g[oh * OW + ow];
      }
    }
  }
}

// Calls fn(F{}) with F = float (dtype 0) or double (dtype 1); returns 0, or -1 for an unknown dtype.
template <typename Fn>
int with_dtype(int dtype, Fn&& fn) {
  if (dtype == 0) {
    fn(float{});
  } else if (dtype == 1) {
    fn(double{});
  } else {
    return -1;
  }
  return 0;
}

}  // namespace

extern "C" {

// dtype: 0 = float32, 1 = float64. mul: 0 = LIF (divide by k = tau), 1 = PLIF (multiply by k = sigmoid(w)).
// h may be null (not needed). Returns 0, or -1 for an unknown dtype.
int nni_dpap_lif_forward(int dtype, const void* x, const void* gate, void* s, void* h, int64_t T, int64_t B,
                         int64_t L, double k, double vth, double vr, int mul, int threads) {
  const Params p{T, B, L, k, vth, vr, 0.0, threads};
  return with_dtype(dtype, [&](auto zero) { forward_typed<decltype(zero)>(x, gate, s, h, p, mul != 0); });
}

// Writes dL/dX into gx; returns dL/dk (PLIF with grad_k != 0; x is only read then), else 0.
double nni_dpap_lif_backward(int dtype, const void* gs, const void* h, const void* x, const void* gate, void* gx,
                             int64_t T, int64_t B, int64_t L, double k, double vth, double vr, int mul,
                             int sigmoid, double alpha, int detach, int grad_k, int threads) {
  const Params p{T, B, L, k, vth, vr, alpha, threads};
  if (dtype == 0) return backward_typed<float>(gs, h, x, gate, gx, p, mul != 0, sigmoid != 0, detach != 0, grad_k != 0);
  return backward_typed<double>(gs, h, x, gate, gx, p, mul != 0, sigmoid != 0, detach != 0, grad_k != 0);
}

// 2x2 average pooling (see pool_forward / pool_backward). Returns 0, or -1 for an unknown dtype.
int nni_dpap_avg_pool2x2_forward(int dtype, const void* x, void* y, int64_t P, int64_t H, int64_t W, int threads) {
  return with_dtype(dtype, [&](auto zero) {
    using F = decltype(zero);
    pool_forward<F>(static_cast<const F*>(x), static_cast<F*>(y), P, H, W, threads);
  });
}

int nni_dpap_avg_pool2x2_backward(int dtype, const void* gy, void* gx, int64_t P, int64_t H, int64_t W,
                                  int threads) {
  return with_dtype(dtype, [&](auto zero) {
    using F = decltype(zero);
    pool_backward<F>(static_cast<const F*>(gy), static_cast<F*>(gx), P, H, W, threads);
  });
}

// Direct-encoded LIF / PLIF (see direct_forward_item): x is [B, C, S]; H = W = 0 without pooling, else
// S = H * W and y is the 2x2-pooled [T, B, C, H/2, W/2]. gate is [T, C] or null. Returns 0, or -1 for an
// unknown dtype.
int nni_dpap_direct_forward(int dtype, const void* x, const void* gate, void* y, int64_t T, int64_t B, int64_t C,
                            int64_t S, int64_t H, int64_t W, double k, double vth, double vr, int mul, int threads) {
  const Params p{T, B, C * S, k, vth, vr, 0.0, threads};
  const DirectShape d{B, C, S, H, W};
  return with_dtype(dtype, [&](auto zero) {
    using F = decltype(zero);
    with_flag(mul != 0, [&](auto M) {
      with_flag(gate != nullptr, [&](auto G) {
        direct_forward_all<F, decltype(M)::value, decltype(G)::value>(
            static_cast<const F*>(x), static_cast<const F*>(gate), static_cast<F*>(y), p, d);
      });
    });
  });
}

// Writes dL/dx ([B, C, S]) into gx; returns dL/dk (PLIF with grad_k != 0), else 0.
double nni_dpap_direct_backward(int dtype, const void* gy, const void* x, const void* gate, void* gx, int64_t T,
                                int64_t B, int64_t C, int64_t S, int64_t H, int64_t W, double k, double vth,
                                double vr, int mul, int sigmoid, double alpha, int detach, int grad_k, int threads) {
  const Params p{T, B, C * S, k, vth, vr, alpha, threads};
  const DirectShape d{B, C, S, H, W};
  double result = 0.0;
  with_dtype(dtype, [&](auto zero) {
    using F = decltype(zero);
    with_flag(mul != 0, [&](auto M) {
      with_flag(gate != nullptr, [&](auto G) {
        with_flag(sigmoid != 0, [&](auto Sg) {
          with_flag(detach != 0, [&](auto D) {
            with_flag(grad_k != 0 && mul != 0, [&](auto K) {
              result = direct_backward_all<F, decltype(M)::value, decltype(G)::value, decltype(Sg)::value,
                                           decltype(D)::value, decltype(K)::value>(
                  static_cast<const F*>(gy), static_cast<const F*>(x), static_cast<const F*>(gate),
                  static_cast<F*>(gx), p, d);
            });
          });
        });
      });
    });
  });
  return result;
}

// 2x2 max pooling (see max_pool_forward / max_pool_backward); arg is uint8 [P, H/2, W/2]. Returns 0, or -1 for
// an unknown dtype.
int nni_dpap_max_pool2x2_forward(int dtype, const void* x, void* y, void* arg, int64_t P, int64_t H, int64_t W,
                                 int threads) {
  return with_dtype(dtype, [&](auto zero) {
    using F = decltype(zero);
    max_pool_forward<F>(static_cast<const F*>(x), static_cast<F*>(y), static_cast<uint8_t*>(arg), P, H, W,
                        threads);
  });
}

int nni_dpap_max_pool2x2_backward(int dtype, const void* gy, const void* arg, void* gx, int64_t P, int64_t H,
                                  int64_t W, int threads) {
  return with_dtype(dtype, [&](auto zero) {
    using F = decltype(zero);
    max_pool_backward<F>(static_cast<const F*>(gy), static_cast<const uint8_t*>(arg), static_cast<F*>(gx), P, H,
                         W, threads);
  });
}

int nni_dpap_lif_abi_version(void) { return 4; }

}  // extern "C"
