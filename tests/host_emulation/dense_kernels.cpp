// The kernels the dense layers' GPU paths run (sgemm, im2col/col2im 2-D and N-D, the
// weight-gradient partial sum, BatchNorm, Scale/Bias, pooling, LRN both regions, MVN, PReLU,
// Embed), run on the host through cuda_on_host.h and compared with direct definitions written
// here from the CPU backend's code (src/backend/cpu). Bit-exact where the kernel promises the
// CPU's summation order; otherwise within float rounding. Prints one line per check and exits
// non-zero on any failure. Built and run by tests/kernels_on_host.rs.
#include "cuda_on_host.h"

#include <cstdio>
#include <random>

#include "../../kernels/common.cuh"
#include "../../kernels/batchnorm.cu"
#include "../../kernels/conv.cu"
#include "../../kernels/embed.cu"
#include "../../kernels/gemm.cu"
#include "../../kernels/lrn.cu"
#include "../../kernels/mvn.cu"
#include "../../kernels/pooling.cu"
#include "../../kernels/prelu.cu"
#include "../../kernels/scale.cu"

static int failures = 0;
static std::mt19937 rng(5);  // fixed: the run is reproducible
std::vector<float> rnd(size_t n, float lo = -1, float hi = 1) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}
void check(const char* what, const std::vector<float>& got, const std::vector<float>& want, float tol) {
    if (got.size() != want.size()) { printf("FAIL %s: sizes\n", what); failures++; return; }
    double worst = 0; size_t wi = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        double e = std::fabs((double)got[i] - want[i]) / std::max(1.0, std::fabs((double)want[i]));
        if (!(e <= worst)) { worst = e; wi = i; }
    }
    bool ok = worst <= tol;
    if (!ok) failures++;
    printf("%s %-60s max rel err %.3g (at %zu: %g vs %g)\n", ok ? "ok  " : "FAIL", what, worst, wi, got[wi], want[wi]);
}

// ---- Convolution: N-D im2col / col2im against their definitions and the 2-D kernels ----
struct G { int C, nd; std::vector<int> im, col, k, pad, st, dil; };
G make(int C, std::vector<int> im, std::vector<int> k, std::vector<int> pad, std::vector<int> st, std::vector<int> dil) {
    G g{C, (int)im.size(), im, {}, k, pad, st, dil};
    for (int d = 0; d < g.nd; ++d) g.col.push_back((im[d] + 2 * pad[d] - (dil[d] * (k[d] - 1) + 1)) / st[d] + 1);
    return g;
}
long prod(const std::vector<int>& v) { long p = 1; for (int x : v) p *= x; return p; }
std::vector<int> table(const G& g) {
    std::vector<int> t;
    for (auto* a : {&g.im, &g.col, &g.k, &g.pad, &g.st, &g.dil}) t.insert(t.end(), a->begin(), a->end());
    return t;
}
// Direct definition of im2col.
std::vector<float> ref_im2col(const G& g, const std::vector<float>& im) {
    long P = prod(g.col), K = prod(g.k), S = prod(g.im);
    std::vector<float> col(g.C * K * P);
    for (int c = 0; c < g.C; ++c)
        for (long k = 0; k < K; ++k)
            for (long p = 0; p < P; ++p) {
                long kk = k, pp = p, off = 0, mult = 1; bool in = true;
                for (int d = g.nd - 1; d >= 0; --d) {
                    long kd = kk % g.k[d], od = pp % g.col[d]; kk /= g.k[d]; pp /= g.col[d];
                    long id = od * g.st[d] - g.pad[d] + kd * g.dil[d];
                    in = in && id >= 0 && id < g.im[d]; off += id * mult; mult *= g.im[d];
                }
                col[(c * K + k) * P + p] = in ? im[c * S + off] : 0.f;
            }
    return col;
}
std::vector<float> ref_col2im(const G& g, const std::vector<float>& col) {
    long P = prod(g.col), K = prod(g.k), S = prod(g.im);
    std::vector<float> im(g.C * S, 0.f);
    for (int c = 0; c < g.C; ++c)
        for (long k = 0; k < K; ++k)
            for (long p = 0; p < P; ++p) {
                long kk = k, pp = p, off = 0, mult = 1; bool in = true;
                for (int d = g.nd - 1; d >= 0; --d) {
                    long kd = kk % g.k[d], od = pp % g.col[d]; kk /= g.k[d]; pp /= g.col[d];
                    long id = od * g.st[d] - g.pad[d] + kd * g.dil[d];
                    in = in && id >= 0 && id < g.im[d]; off += id * mult; mult *= g.im[d];
                }
                if (in) im[c * S + off] += col[(c * K + k) * P + p];
            }
    return im;
}

void test_conv() {
    std::vector<G> gs = {
        make(3, {7, 6}, {3, 3}, {1, 1}, {1, 1}, {1, 1}),
        make(4, {9, 8}, {3, 2}, {2, 0}, {2, 3}, {1, 2}),
        make(2, {5, 9}, {1, 4}, {0, 3}, {1, 2}, {1, 1}),
        make(2, {2, 2}, {3, 3}, {1, 1}, {1, 1}, {1, 1}),
        make(1, {5, 20}, {2, 3}, {0, 1}, {1, 9}, {1, 1}),
        make(2, {4, 5, 6}, {2, 3, 2}, {1, 0, 1}, {1, 2, 2}, {2, 1, 1}),
        make(3, {11}, {3}, {2}, {3}, {2}),
        make(2, {3, 4, 2, 3}, {2, 1, 2, 2}, {0, 1, 1, 0}, {1, 2, 1, 1}, {1, 1, 1, 2}),
    };
    const int images = 3;
    for (auto& g : gs) {
        long S = prod(g.im), P = prod(g.col), K = prod(g.k);
        long il = g.C * S, cl = g.C * K * P;
        auto im = rnd(images * il), c = rnd(images * cl);
        auto t = table(g);
        std::vector<float> col(images * cl, NAN), back(images * il, NAN);
        launch(Dim3{1, 1, (unsigned)images}, 1, [&] {
            conv_im2col_nd_f32(im.data(), col.data(), t.data(), g.nd, g.C, S, P, K, il, cl);
        });
        launch(Dim3{1, 1, (unsigned)images}, 1, [&] {
            conv_col2im_nd_f32(c.data(), back.data(), t.data(), g.nd, g.C, S, P, K, il, cl);
        });
        std::vector<float> want_col, want_im;
        for (int n = 0; n < images; ++n) {
            auto a = ref_im2col(g, std::vector<float>(im.begin() + n * il, im.begin() + (n + 1) * il));
            auto b = ref_col2im(g, std::vector<float>(c.begin() + n * cl, c.begin() + (n + 1) * cl));
            want_col.insert(want_col.end(), a.begin(), a.end());
            want_im.insert(want_im.end(), b.begin(), b.end());
        }
        char what[200];
        snprintf(what, 200, "conv_im2col_nd %dD C%d", g.nd, g.C);
        check(what, col, want_col, 0);
        snprintf(what, 200, "conv_col2im_nd %dD C%d", g.nd, g.C);
        check(what, back, want_im, 1e-6);
        if (g.nd == 2) {
            std::vector<float> col2(images * cl, NAN), back2(images * il, NAN);
            launch(Dim3{(unsigned)P, (unsigned)(g.C * K), (unsigned)images}, 1, [&] {
                conv_im2col_f32(im.data(), col2.data(), g.C, g.im[0], g.im[1], g.k[0], g.k[1], g.pad[0], g.pad[1],
                                g.st[0], g.st[1], g.dil[0], g.dil[1], g.col[0], g.col[1], il, cl);
            });
            launch(Dim3{1, 1, (unsigned)images}, 1, [&] {
                conv_col2im_f32(c.data(), back2.data(), g.C, g.im[0], g.im[1], g.k[0], g.k[1], g.pad[0], g.pad[1],
                                g.st[0], g.st[1], g.dil[0], g.dil[1], g.col[0], g.col[1], il, cl);
            });
            check("  N-D im2col == 2-D im2col (bits)", col, col2, 0);
            check("  N-D col2im == 2-D col2im (bits)", back, back2, 0);
        }
    }
    // sum partials
    auto part = rnd(4 * 10);
    auto dw = rnd(10);
    auto want = dw;
    for (int i = 0; i < 10; ++i) { float s = part[i]; for (int z = 1; z < 4; ++z) s += part[z * 10 + i]; want[i] += s; }
    launch(Dim3{1, 1, 1}, 1, [&] { conv_sum_partials_f32(part.data(), dw.data(), 10, 4); });
    check("conv_sum_partials", dw, want, 0);
}

// ---- LRN WITHIN_CHANNEL (reference: src/backend/cpu/lrn.rs, lrn_within_*) ----
void ave_window(int o, int len, int k, int pad, int& ext, int& s, int& e) {
    int start = o - pad, end = std::min(start + k, len + pad);
    ext = end - start; s = std::max(start, 0); e = std::min(end, len);
}
void test_lrn() {
    for (int size : {3, 5, 1}) {
        int planes = 6, H = 5, W = 7; long n = planes * H * W;
        float alpha = 0.7f, beta = 0.75f;
        auto x = rnd(n), dy = rnd(n);
        int pad = (size - 1) / 2;
        std::vector<float> pooled(n), power(n), y(n), dx(n);
        for (int p = 0; p < planes; ++p)
            for (int ph = 0; ph < H; ++ph)
                for (int pw = 0; pw < W; ++pw) {
                    int eh, hs, he, ew, ws, we;
                    ave_window(ph, H, size, pad, eh, hs, he);
                    ave_window(pw, W, size, pad, ew, ws, we);
                    float s = 0;
                    for (int h = hs; h < he; ++h) for (int w = ws; w < we; ++w) { float v = x[p * H * W + h * W + w]; s += v * v; }
                    pooled[p * H * W + ph * W + pw] = s / (float)(eh * ew);
                }
        for (long i = 0; i < n; ++i) { power[i] = powf(alpha * pooled[i] + 1.f, -beta); y[i] = x[i] * power[i]; }
        float ds = -beta * alpha;
        for (int p = 0; p < planes; ++p) {
            std::vector<float> dpool(H * W), out(H * W, 0.f);
            for (int i = 0; i < H * W; ++i) { long j = p * H * W + i; dpool[i] = (power[j] / (alpha * pooled[j] + 1.f)) * ds * (dy[j] * x[j]); }
            for (int ph = 0; ph < H; ++ph) for (int pw = 0; pw < W; ++pw) {
                int eh, hs, he, ew, ws, we;
                ave_window(ph, H, size, pad, eh, hs, he); ave_window(pw, W, size, pad, ew, ws, we);
                float gg = dpool[ph * W + pw] / (float)(eh * ew);
                for (int h = hs; h < he; ++h) for (int w = ws; w < we; ++w) out[h * W + w] += gg;
            }
            for (int i = 0; i < H * W; ++i) { long j = p * H * W + i; dx[j] = dy[j] * power[j] + out[i] * (2.f * x[j]); }
        }
        std::vector<float> kp(n, NAN), kq(n, NAN), ky(n, NAN), kd(n, NAN), kdx(n, NAN);
        launch(Dim3{1, 1, 1}, 1, [&] { lrn_within_fwd_f32(x.data(), kp.data(), kq.data(), ky.data(), planes, H, W, size, alpha, beta); });
        launch(Dim3{1, 1, 1}, 1, [&] { lrn_within_dpool_f32(x.data(), kp.data(), kq.data(), dy.data(), kd.data(), n, alpha, ds); });
        launch(Dim3{1, 1, 1}, 1, [&] { lrn_within_bwd_f32(x.data(), kq.data(), dy.data(), kd.data(), kdx.data(), planes, H, W, size); });
        check("lrn_within pooled", kp, pooled, 0);
        check("lrn_within power", kq, power, 1e-6);
        check("lrn_within y", ky, y, 1e-6);
        check("lrn_within dx", kdx, dx, 1e-6);
    }
}

// ---- MVN (reference: src/backend/cpu/mvn.rs), in place, with several rows per block ----
void test_mvn() {
    for (int nv : {0, 1}) for (long dim : {1L, 7L, 300L}) {
        long rows = 5, n = rows * dim; float eps = 1e-3f;
        auto x = rnd(n), dy = rnd(n);
        std::vector<float> y(n), sd(rows), dx(n);
        for (long r = 0; r < rows; ++r) {
            double s = 0; for (long i = 0; i < dim; ++i) s += x[r * dim + i];
            float mean = (float)(s / dim);
            for (long i = 0; i < dim; ++i) y[r * dim + i] = x[r * dim + i] - mean;
            if (nv) {
                double ss = 0; for (long i = 0; i < dim; ++i) ss += (double)y[r * dim + i] * y[r * dim + i];
                float var = (float)(ss / dim); float s2 = sqrtf(var) + eps;
                for (long i = 0; i < dim; ++i) y[r * dim + i] /= s2;
                sd[r] = s2;
            }
        }
        float inv = 1.f / dim;
        for (long r = 0; r < rows; ++r) {
            double s = 0, sy = 0;
            for (long i = 0; i < dim; ++i) { s += dy[r * dim + i]; sy += (double)y[r * dim + i] * dy[r * dim + i]; }
            float sdy = (float)s, sydy = (float)sy;
            for (long i = 0; i < dim; ++i) {
                long j = r * dim + i;
                dx[j] = nv ? (dy[j] - (y[j] * sydy + sdy) * inv) / sd[r] : dy[j] - sdy * inv;
            }
        }
        // in place, as the layer may run
        std::vector<float> ky = x, ksd(rows, 0), kdx = dy;
        launch(Dim3{3, 1, 1}, 32, [&] { mvn_fwd_f32(ky.data(), ky.data(), ksd.data(), rows, dim, nv, eps); });
        launch(Dim3{2, 1, 1}, 32, [&] { mvn_bwd_f32(ky.data(), kdx.data(), kdx.data(), ksd.data(), rows, dim, nv, inv); });
        char what[100];
        snprintf(what, 100, "mvn fwd nv=%d dim=%ld (in place)", nv, dim); check(what, ky, y, 1e-6);
        snprintf(what, 100, "mvn bwd nv=%d dim=%ld (in place)", nv, dim); check(what, kdx, dx, 2e-5);
    }
}

// ---- PReLU (reference: src/backend/cpu/prelu.rs) ----
void test_prelu() {
    for (int shared : {0, 1}) {
        long num = 3, C = 4, dim = 5000, n = num * C * dim;
        auto x = rnd(n), dy = rnd(n), slope = rnd(shared ? 1 : C);
        std::vector<float> y(n), dx(n), gs = rnd(shared ? 1 : C);
        auto g0 = gs;
        std::vector<double> per(C, 0);
        for (long i = 0; i < n; ++i) {
            long c = (i / dim) % C; float a = slope[shared ? 0 : c];
            y[i] = std::max(x[i], 0.f) + a * std::min(x[i], 0.f);
            dx[i] = x[i] > 0 ? dy[i] : dy[i] * a;
            if (x[i] <= 0) per[c] += (double)dy[i] * x[i];
        }
        if (shared) { double s = 0; for (auto v : per) s += v; gs[0] += (float)s; }
        else for (int c = 0; c < C; ++c) gs[c] += (float)per[c];
        std::vector<float> ky(n), kdx(n);
        launch(Dim3{1, 1, 1}, 1, [&] { prelu_fwd_f32(x.data(), slope.data(), ky.data(), n, C, dim, shared); });
        launch(Dim3{1, 1, 1}, 1, [&] { prelu_bwd_f32(x.data(), dy.data(), slope.data(), kdx.data(), n, C, dim, shared); });
        long chunks = 3;  // like channel_chunks: any count gives the same sums in double
        std::vector<double> part(C * chunks, NAN);
        launch(Dim3{(unsigned)C, (unsigned)chunks, 1}, 32, [&] { prelu_slope_partials_f32(x.data(), dy.data(), part.data(), num, C, dim); });
        auto kg = g0;
        if (shared) launch(Dim3{1, 1, 1}, 32, [&] { prelu_slope_finish_shared_f32(part.data(), kg.data(), C * chunks); });
        else launch(Dim3{(unsigned)C, 1, 1}, 32, [&] { scale_grad_finish_f32(part.data(), kg.data(), chunks, 1); });
        check(shared ? "prelu fwd shared" : "prelu fwd", ky, y, 0);
        check(shared ? "prelu bwd shared" : "prelu bwd", kdx, dx, 0);
        check(shared ? "prelu slope grad shared" : "prelu slope grad", kg, gs, 1e-6);
    }
}

// ---- Embed (reference: src/backend/cpu/embed.rs) ----
void test_embed() {
    long m = 37, k = 11, n = 6;
    std::vector<float> idx(m);
    for (long i = 0; i < m; ++i) idx[i] = (float)((i * 7) % k);
    auto w = rnd(k * n), b = rnd(n), dy = rnd(m * n), dw = rnd(k * n);
    std::vector<float> y(m * n), want_dw = dw;
    for (long i = 0; i < m; ++i) for (long j = 0; j < n; ++j) {
        y[i * n + j] = w[(long)idx[i] * n + j] + b[j];
        want_dw[(long)idx[i] * n + j] += dy[i * n + j];
    }
    std::vector<float> ky(m * n);
    launch(Dim3{1, 1, 1}, 1, [&] { embed_fwd_f32(idx.data(), w.data(), b.data(), ky.data(), m, k, n); });
    std::vector<int> firsts(k + 3, 0);  // rows 11..13 never used
    launch(Dim3{1, 1, 1}, 1, [&] { embed_first_use_f32(idx.data(), firsts.data(), m, k + 3); });
    for (long r = 0; r < k + 3; ++r) {
        long want = 0;
        for (long i = m - 1; i >= 0; --i) if ((long)idx[i] == r) want = m - i;
        if (firsts[r] != want) { printf("FAIL embed_first_use row %ld: %d vs %ld\n", r, firsts[r], want); failures++; }
    }
    auto dw_big = dw; dw_big.resize((k + 3) * n, 7.f);
    launch(Dim3{1, 1, 1}, 1, [&] { embed_bwd_weights_f32(idx.data(), firsts.data(), dy.data(), dw_big.data(), m, k + 3, n); });
    for (long t = k * n; t < (k + 3) * n; ++t) if (dw_big[t] != 7.f) { printf("FAIL unused row written\n"); failures++; break; }
    dw_big.resize(k * n);
    dw = dw_big;
    check("embed fwd", ky, y, 0);
    check("embed bwd weights (bits)", dw, want_dw, 0);
    for (float bad : {11.f, -1.f, 2.5f, NAN, INFINITY, 1e30f}) {
        auto id2 = idx; id2[20] = bad; id2[30] = bad;
        unsigned long long first = ~0ull;
        launch(Dim3{1, 1, 1}, 1, [&] { embed_find_bad_index_f32(id2.data(), m, k, &first); });
        if (first != 20) { printf("FAIL embed_find_bad_index %g -> %llu\n", bad, first); failures++; }
    }
    unsigned long long first = ~0ull;
    launch(Dim3{1, 1, 1}, 1, [&] { embed_find_bad_index_f32(idx.data(), m, k, &first); });
    if (first != ~0ull) { printf("FAIL embed_find_bad_index on good input\n"); failures++; }
    else printf("ok   embed_find_bad_index\n");
}


// ---- sgemm (reference: the definition, in double) ----
void test_gemm() {
    struct Case { int ta, tb, M, N, K, batch; float beta; };
    const Case cases[] = {
        {0, 0, 37, 29, 53, 1, 0.f}, {1, 0, 37, 29, 53, 2, 1.f}, {0, 1, 130, 70, 9, 1, 0.f},
        {1, 1, 5, 300, 17, 3, 0.5f}, {0, 0, 64, 64, 16, 1, 1.f}, {0, 1, 1, 1, 1, 1, 0.f},
        {1, 0, 129, 131, 0, 1, 0.f},
    };
    for (const Case& c : cases) {
        // Row-major op(A) M x K and op(B) K x N, stored with padded leading dimensions.
        const int lda = (c.ta ? c.M : c.K) + 3, ldb = (c.tb ? c.K : c.N) + 1, ldc = c.N + 2;
        const long ra = c.ta ? c.K : c.M, rb = c.tb ? c.N : c.K;
        const long sa = ra * lda + 5, sb = rb * ldb + 2, sc = (long)c.M * ldc + 7;
        auto A = rnd(sa * c.batch), B = rnd(sb * c.batch), C = rnd(sc * c.batch);
        if (c.beta == 0.f) for (auto& v : C) v = NAN;  // beta 0 must not read C
        std::vector<float> expect = C;
        for (int z = 0; z < c.batch; ++z)
            for (int i = 0; i < c.M; ++i)
                for (int j = 0; j < c.N; ++j) {
                    double acc = 0;
                    for (int q = 0; q < c.K; ++q) {
                        const float a = c.ta ? A[z * sa + (long)q * lda + i] : A[z * sa + (long)i * lda + q];
                        const float b = c.tb ? B[z * sb + (long)j * ldb + q] : B[z * sb + (long)q * ldb + j];
                        acc += (double)a * b;
                    }
                    float& w = expect[z * sc + (long)i * ldc + j];
                    w = (float)acc + (c.beta == 0.f ? 0.f : c.beta * w);
                }
        for (int big : {0, 1}) {
            std::vector<float> got = C, want = expect;
            const int tile = big ? 128 : 64;
            launch(Dim3{(unsigned)((c.N + tile - 1) / tile), (unsigned)((c.M + tile - 1) / tile), (unsigned)c.batch},
                   256, [&] {
                       if (big)
                           gemm_sgemm_128x128_f32(c.ta, c.tb, c.M, c.N, c.K, 1.f, A.data(), lda, sa, B.data(), ldb, sb,
                                                  c.beta, got.data(), ldc, sc);
                       else
                           gemm_sgemm_64x64_f32(c.ta, c.tb, c.M, c.N, c.K, 1.f, A.data(), lda, sa, B.data(), ldb, sb,
                                                c.beta, got.data(), ldc, sc);
                   });
            // Elements outside the matrices (the padding) must keep their values, NaN included.
            for (size_t i = 0; i < got.size(); ++i)
                if (std::isnan(got[i]) && std::isnan(want[i])) got[i] = want[i] = 0.f;
            char what[120];
            snprintf(what, 120, "sgemm %s ta%d tb%d %dx%dx%d batch %d beta %g", big ? "128x128" : "64x64", c.ta, c.tb,
                     c.M, c.N, c.K, c.batch, c.beta);
            check(what, got, want, 2e-6 * std::max(1, c.K));
        }
    }
}

// ---- BatchNorm (reference: src/backend/cpu/batch_norm.rs) ----
void test_batchnorm() {
    const long num = 3, C = 4, sp = 7, n = num * C * sp, chunks = 2;
    const float eps = 1e-5f, maf = 0.9f;
    auto x = rnd(n), dy = rnd(n);
    std::vector<float> mean(C), var(C), sd(C), y(n), dx(n), dxg(n);
    auto mean_sum = rnd(C), var_sum = rnd(C, 0.5f, 2.f);
    float factor = 1.7f;
    const double m = num * sp;
    for (long c = 0; c < C; ++c) {
        double s = 0, ss = 0;
        for (long i = 0; i < num; ++i) for (long p = 0; p < sp; ++p) s += x[(i * C + c) * sp + p];
        mean[c] = (float)(s / m);
        for (long i = 0; i < num; ++i) for (long p = 0; p < sp; ++p) { double d = x[(i * C + c) * sp + p] - mean[c]; ss += d * d; }
        var[c] = (float)(ss / m);
    }
    auto ms = mean_sum, vs = var_sum;
    float f = factor * maf + 1.f;
    const float corr = (float)m / (float)(m - 1);
    for (long c = 0; c < C; ++c) { ms[c] = ms[c] * maf + mean[c]; vs[c] = vs[c] * maf + corr * var[c]; sd[c] = sqrtf(var[c] + eps); }
    for (long i = 0; i < n; ++i) { long c = (i / sp) % C; y[i] = (x[i] - mean[c]) / sd[c]; }
    std::vector<float> sdyy(C), sdy(C);
    for (long c = 0; c < C; ++c) {
        double a = 0, b = 0;
        for (long i = 0; i < num; ++i) for (long p = 0; p < sp; ++p) { long j = (i * C + c) * sp + p; a += (double)dy[j] * y[j]; b += dy[j]; }
        sdyy[c] = (float)a; sdy[c] = (float)b;
    }
    const float neg_inv_m = -1.f / (float)(num * sp);
    for (long i = 0; i < n; ++i) { long c = (i / sp) % C; dx[i] = (dy[i] + (y[i] * sdyy[c] + sdy[c]) * neg_inv_m) / sd[c]; dxg[i] = dy[i] / sd[c]; }

    std::vector<double> part(C * chunks);
    std::vector<float> kmean(C), kvar(C), ksd(C), ky(n), ksdyy(C), ksdy(C), kdx = dy, kdxg(n);
    auto kms = mean_sum, kvs = var_sum;
    std::vector<float> kf{factor};
    auto partials = [&](const float* a, const float* b, const float* mu, int mode) {
        launch(Dim3{(unsigned)C, (unsigned)chunks, 1}, 64, [&] { batchnorm_channel_partials_f32(a, b, mu, part.data(), num, C, sp, mode); });
    };
    auto finish = [&](float* out, double div) {
        launch(Dim3{(unsigned)C, 1, 1}, 64, [&] { batchnorm_channel_finish_f32(part.data(), out, chunks, div); });
    };
    partials(x.data(), nullptr, nullptr, 0); finish(kmean.data(), m);
    partials(x.data(), nullptr, kmean.data(), 1); finish(kvar.data(), m);
    // One thread per channel (these kernels have no grid-stride loop).
    launch(Dim3{(unsigned)C, 1, 1}, 1, [&] { batchnorm_update_running_f32(kmean.data(), kvar.data(), kms.data(), kvs.data(), kf.data(), C, maf, corr); });
    launch(Dim3{(unsigned)C, 1, 1}, 1, [&] { batchnorm_std_f32(kvar.data(), ksd.data(), C, eps); });
    launch(Dim3{1, 1, 1}, 1, [&] { batchnorm_normalize_f32(x.data(), kmean.data(), ksd.data(), ky.data(), n, C, sp); });
    partials(dy.data(), ky.data(), nullptr, 2); finish(ksdyy.data(), 1.0);
    partials(dy.data(), nullptr, nullptr, 0); finish(ksdy.data(), 1.0);
    launch(Dim3{1, 1, 1}, 1, [&] { batchnorm_bwd_train_f32(kdx.data(), ky.data(), ksd.data(), ksdyy.data(), ksdy.data(), kdx.data(), n, C, sp, neg_inv_m); });
    launch(Dim3{1, 1, 1}, 1, [&] { batchnorm_bwd_global_f32(dy.data(), ksd.data(), kdxg.data(), n, C, sp); });
    check("batchnorm mean", kmean, mean, 1e-7);
    check("batchnorm variance", kvar, var, 1e-7);
    check("batchnorm running mean", kms, ms, 1e-7);
    check("batchnorm running variance", kvs, vs, 1e-7);
    check("batchnorm running factor", kf, std::vector<float>{f}, 0);
    check("batchnorm y", ky, y, 1e-6);
    check("batchnorm dx (training, in place)", kdx, dx, 1e-5);
    check("batchnorm dx (global)", kdxg, dxg, 1e-6);
    std::vector<float> gm(C), gv(C), wm(C), wv(C);
    for (long c = 0; c < C; ++c) { wm[c] = (1.f / factor) * mean_sum[c]; wv[c] = (1.f / factor) * var_sum[c]; }
    std::vector<float> fac{factor};
    launch(Dim3{(unsigned)C, 1, 1}, 1, [&] { batchnorm_global_stats_f32(mean_sum.data(), var_sum.data(), fac.data(), gm.data(), gv.data(), C); });
    check("batchnorm global statistics", gm, wm, 0);
    check("batchnorm global variance", gv, wv, 0);
}

// ---- Scale / Bias (reference: src/backend/cpu/scale.rs) ----
void test_scale() {
    const long outer = 3, dim = 5, inner = 11, n = outer * dim * inner, chunks = 2;
    auto x = rnd(n), sc = rnd(dim), b = rnd(dim), g0 = rnd(dim);
    std::vector<float> y(n), yb(n), ga = g0, gs(dim);
    for (long i = 0; i < n; ++i) { long d = (i / inner) % dim; y[i] = sc[d] * x[i] + b[d]; yb[i] = x[i] + b[d]; }
    for (long d = 0; d < dim; ++d) {
        double s = 0, p = 0;
        for (long o = 0; o < outer; ++o) for (long i = 0; i < inner; ++i) { long j = (o * dim + d) * inner + i; s += x[j]; p += (double)x[j] * y[j]; }
        ga[d] += (float)s; gs[d] = (float)p;
    }
    std::vector<float> ky = x, kyb(n), kga = g0, kgs(dim, NAN);
    std::vector<double> part(dim * chunks);
    launch(Dim3{1, 1, 1}, 1, [&] { scale_fwd_f32(ky.data(), sc.data(), b.data(), ky.data(), n, dim, inner); });
    launch(Dim3{1, 1, 1}, 1, [&] { scale_bias_fwd_f32(x.data(), b.data(), kyb.data(), n, dim, inner); });
    launch(Dim3{(unsigned)dim, (unsigned)chunks, 1}, 32, [&] { scale_grad_partials_f32(x.data(), nullptr, part.data(), outer, dim, inner); });
    launch(Dim3{(unsigned)dim, 1, 1}, 32, [&] { scale_grad_finish_f32(part.data(), kga.data(), chunks, 1); });
    launch(Dim3{(unsigned)dim, (unsigned)chunks, 1}, 32, [&] { scale_grad_partials_f32(x.data(), y.data(), part.data(), outer, dim, inner); });
    launch(Dim3{(unsigned)dim, 1, 1}, 32, [&] { scale_grad_finish_f32(part.data(), kgs.data(), chunks, 0); });
    check("scale forward with bias (in place)", ky, y, 0);
    check("bias forward", kyb, yb, 0);
    check("scale gradient of a (accumulated)", kga, ga, 1e-6);
    check("scale gradient of a*b (overwritten)", kgs, gs, 1e-6);
}

// ---- Pooling (reference: src/backend/cpu/pooling.rs) ----
struct PoolG { long planes; int H, W, PH, PW, kh, kw, sh, sw, ph, pw; };
int pooled(int size, int k, int pad, int s, bool clip) {
    int out = (int)std::ceil((float)(size + 2 * pad - k) / s) + 1;
    if (clip && (out - 1) * s >= size + pad) --out;
    return out;
}
void test_pooling() {
    const PoolG gs[] = {
        {6, 7, 6, 0, 0, 3, 3, 2, 2, 0, 0}, {6, 7, 6, 0, 0, 3, 3, 2, 2, 1, 1}, {4, 5, 9, 0, 0, 2, 3, 1, 2, 1, 0},
        {3, 4, 4, 0, 0, 4, 4, 1, 1, 0, 0},
    };
    for (PoolG g : gs) {
        const bool clip = g.ph > 0 || g.pw > 0;
        g.PH = pooled(g.H, g.kh, g.ph, g.sh, clip);
        g.PW = pooled(g.W, g.kw, g.pw, g.sw, clip);
        const long ni = g.planes * g.H * g.W, no = g.planes * g.PH * g.PW;
        auto x = rnd(ni), dy = rnd(no);
        for (long i = 0; i < ni; i += 5) x[i] = x[i / 2];  // ties: the first one wins
        std::vector<float> ymax(no), yave(no), dxmax(ni, 0.f), dxave(ni, 0.f);
        std::vector<int> mask(no);
        for (long p = 0; p < g.planes; ++p)
            for (int oh = 0; oh < g.PH; ++oh)
                for (int ow = 0; ow < g.PW; ++ow) {
                    const long o = (p * g.PH + oh) * g.PW + ow;
                    int hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
                    int he = std::min(hs + g.kh, g.H), we = std::min(ws + g.kw, g.W);
                    hs = std::max(hs, 0); ws = std::max(ws, 0);
                    float best = -3.402823466e+38f; int arg = -1;
                    for (int h = hs; h < he; ++h) for (int w = ws; w < we; ++w) {
                        float v = x[p * g.H * g.W + h * g.W + w];
                        if (v > best) { best = v; arg = h * g.W + w; }
                    }
                    ymax[o] = best; mask[o] = arg;
                    if (arg >= 0) dxmax[p * g.H * g.W + arg] += dy[o];
                    int as = oh * g.sh - g.ph, ae = std::min(as + g.kh, g.H + g.ph);
                    int bs = ow * g.sw - g.pw, be = std::min(bs + g.kw, g.W + g.pw);
                    const float size = (float)((ae - as) * (be - bs));
                    as = std::max(as, 0); bs = std::max(bs, 0); ae = std::min(ae, g.H); be = std::min(be, g.W);
                    float sum = 0;
                    for (int h = as; h < ae; ++h) for (int w = bs; w < be; ++w) sum += x[p * g.H * g.W + h * g.W + w];
                    yave[o] = sum / size;
                    const float share = dy[o] / size;
                    for (int h = as; h < ae; ++h) for (int w = bs; w < be; ++w) dxave[p * g.H * g.W + h * g.W + w] += share;
                }
        std::vector<float> kmax(no), kave(no), ktop(no), kdxm(ni, NAN), kdxa(ni, NAN);
        std::vector<int> kmask(no);
        launch(Dim3{1, 1, 1}, 1, [&] { pooling_max_fwd_f32(x.data(), kmax.data(), kmask.data(), ktop.data(), g.planes, g.H, g.W, g.PH, g.PW, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw); });
        launch(Dim3{1, 1, 1}, 1, [&] { pooling_max_bwd_f32(dy.data(), kmask.data(), kdxm.data(), g.planes, g.H, g.W, g.PH, g.PW, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw); });
        launch(Dim3{1, 1, 1}, 1, [&] { pooling_ave_fwd_f32(x.data(), kave.data(), g.planes, g.H, g.W, g.PH, g.PW, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw); });
        launch(Dim3{1, 1, 1}, 1, [&] { pooling_ave_bwd_f32(dy.data(), kdxa.data(), g.planes, g.H, g.W, g.PH, g.PW, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw); });
        std::vector<float> fmask(mask.begin(), mask.end()), fkmask(kmask.begin(), kmask.end());
        char what[120];
        snprintf(what, 120, "pooling %dx%d k%dx%d s%dx%d p%dx%d: max", g.H, g.W, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw);
        check(what, kmax, ymax, 0);
        check("  argmax (mask and top mask)", fkmask, fmask, 0);
        check("  top mask", ktop, fmask, 0);
        check("  max backward", kdxm, dxmax, 0);
        check("  ave", kave, yave, 0);
        check("  ave backward", kdxa, dxave, 0);
        if (g.PH == 1 && g.PW == 1 && g.ph == 0 && g.pw == 0) {
            std::vector<float> gmax(no), gave(no), gtop(no);
            std::vector<int> gmask(no);
            launch(Dim3{2, 1, 1}, 32, [&] { pooling_global_max_fwd_f32(x.data(), gmax.data(), gmask.data(), gtop.data(), g.planes, (long)g.H * g.W); });
            launch(Dim3{2, 1, 1}, 32, [&] { pooling_global_ave_fwd_f32(x.data(), gave.data(), g.planes, (long)g.H * g.W); });
            std::vector<float> fg(gmask.begin(), gmask.end());
            check("  global max", gmax, ymax, 0);
            check("  global argmax", fg, fmask, 0);
            check("  global ave", gave, yave, 1e-6);
        }
    }
}

// ---- LRN ACROSS_CHANNELS (reference: src/backend/cpu/lrn.rs, lrn_across_*) ----
void test_lrn_across() {
    for (int size : {5, 3, 1}) {
        const long num = 2, C = 7, plane = 6, n = num * C * plane;
        const float alpha = 0.3f, beta = 0.75f, k = 2.f;
        auto x = rnd(n), dy = rnd(n);
        std::vector<float> scale(n), y(n), ratio(n), dx(n);
        const int pre = (size - 1) / 2;
        const float aos = alpha / size, cr = 2.f * alpha * beta / size;
        for (long i = 0; i < n; ++i) {
            long s = i % plane, c = (i / plane) % C, b = i / (plane * C);
            float sum = 0;
            for (long cc = std::max(c - pre, 0L); cc < std::min(c + pre + 1, C); ++cc) { float v = x[(b * C + cc) * plane + s]; sum += v * v; }
            scale[i] = k + aos * sum;
            y[i] = powf(scale[i], -beta) * x[i];
        }
        for (long i = 0; i < n; ++i) ratio[i] = dy[i] * y[i] / scale[i];
        for (long i = 0; i < n; ++i) {
            long s = i % plane, c = (i / plane) % C, b = i / (plane * C);
            float sum = 0;
            for (long cc = std::max(c - pre, 0L); cc < std::min(c + pre + 1, C); ++cc) sum += ratio[(b * C + cc) * plane + s];
            dx[i] = dy[i] * powf(scale[i], -beta) - cr * (x[i] * sum);
        }
        std::vector<float> ks(n), ky(n), kr(n), kdx = dy;
        launch(Dim3{1, 1, 1}, 1, [&] { lrn_across_scale_f32(x.data(), ks.data(), num, C, plane, size, aos, k); });
        launch(Dim3{1, 1, 1}, 1, [&] { lrn_across_output_f32(x.data(), ks.data(), ky.data(), n, beta); });
        launch(Dim3{1, 1, 1}, 1, [&] { lrn_across_ratio_f32(dy.data(), ky.data(), ks.data(), kr.data(), n); });
        launch(Dim3{1, 1, 1}, 1, [&] { lrn_across_bwd_f32(x.data(), ks.data(), kr.data(), kdx.data(), kdx.data(), num, C, plane, size, beta, cr); });
        check("lrn_across scale", ks, scale, 0);
        check("lrn_across y", ky, y, 0);
        check("lrn_across dx (in place)", kdx, dx, 0);
    }
}

int main() {
    test_gemm();
    test_conv();
    test_batchnorm();
    test_scale();
    test_pooling();
    test_lrn_across();
    test_lrn();
    test_mvn();
    test_prelu();
    test_embed();
    printf("%d failures\n", failures);
    return failures != 0;
}
