/* Template body of the tile primitives: included by _tile.h once per precision with REAL (the
 * scalar), V (a GCC vector of REAL, one SIMD register), VL (its lanes), SFX (name suffix),
 * VTANH / VSIGMOID (exact vector activations) and VTANH_RNN (the tanh RNN's tanh) defined.
 * No include guard on purpose. */

#define FN(name) NN_CAT(name, SFX)
#ifndef NN_TILE_VECTORS   /* vectors per tile: two with AVX or SSE, one zmm with AVX-512 (measured: the same */
#if NN_VBYTES == 64       /* speed on the reference workload as two zmm, and no 2x padding of small batches) */
#define NN_TILE_VECTORS 1
#else
#define NN_TILE_VECTORS 2
#endif
#endif
#define NV NN_TILE_VECTORS /* vectors per tile row block */
#define TILE (NV * VL)     /* batch rows per tile: 16 (float) or 8 (double) with AVX or AVX-512 */
#define MVB (12 / NV)      /* weight rows per register block of the products: 12 accumulators
                            * (24 with AVX-512's 32 registers measured no faster) */
#define CH 16              /* time steps per chunk of the weight-gradient products */

static inline int FN(tile_rows)(void) { return TILE; }

NN_INLINE REAL FN(hsum)(V v)
{
    REAL s = 0;
    for (int l = 0; l < VL; l++) s += v[l];
    return s;
}

/* dst[f][b] = src[b * sb + f * sf] for b < nb, 0 for the padded rows b >= nb. */
NN_INLINE void FN(load_tile)(V *dst_, int F, int nb, const REAL *src, ptrdiff_t sb, ptrdiff_t sf)
{
    REAL *dst = (REAL *)dst_;
    for (int b = 0; b < nb; b++)
        for (int f = 0; f < F; f++) dst[f * TILE + b] = src[b * sb + f * sf];
    for (int f = 0; f < F; f++)
        for (int b = nb; b < TILE; b++) dst[f * TILE + b] = 0;
}

/* dst[f][b] += src[b * sb + f * sf] for b < nb. */
NN_INLINE void FN(add_tile)(V *dst_, int F, int nb, const REAL *src, ptrdiff_t sb, ptrdiff_t sf)
{
    REAL *dst = (REAL *)dst_;
    for (int b = 0; b < nb; b++)
        for (int f = 0; f < F; f++) dst[f * TILE + b] += src[b * sb + f * sf];
}

/* dst[b * sb + f * sf] = src[f][b] for b < nb. */
NN_INLINE void FN(store_tile)(REAL *dst, ptrdiff_t sb, ptrdiff_t sf, int F, int nb, const V *src_)
{
    const REAL *src = (const REAL *)src_;
    for (int b = 0; b < nb; b++)
        for (int f = 0; f < F; f++) dst[b * sb + f * sf] = src[f * TILE + b];
}

/* mb (<= MVB) rows of out = init + bias + bias2 + W @ in[:K] + W2 @ in[K:K + K2], W rows of
 * length K with stride ldw (W2: K2, ldw2; K2 = 0 without), times (1 - dsc²) row by row if dsc
 * is not NULL (tanh' from the saved output). The second product continues the same
 * accumulators over the next K2 rows of in (the GRU's r and z: W_h h_{t-1} + W_i x_t over the
 * slot [h; x], with no second pass over the gates). With
 * mb = MVB: 12 independent accumulator chains (the FMA latency of 4 cycles times 2 FMA pipes
 * needs >= 8) and NV + MVB loads (state vectors, weight broadcasts) per 12 FMAs. */
NN_INLINE void FN(mv_block)(const int mb, int K, const REAL *NN_RESTRICT W, ptrdiff_t ldw,
                            int K2, const REAL *NN_RESTRICT W2, ptrdiff_t ldw2,
                            const V *in, const V *init, const REAL *bias, const REAL *bias2,
                            const V *dsc, V *out)
{
    V acc[MVB][NV];
    const REAL *w[MVB];
    for (int r = 0; r < mb; r++) {
        w[r] = W + r * ldw;
        for (int v = 0; v < NV; v++) {
            V a = init ? init[r * NV + v] : (V){0};
            if (bias) a += bias[r];
            if (bias2) a += bias2[r];
            acc[r][v] = a;
        }
    }
    for (int k = 0; k < K; k++, in += NV) {
        V h[NV];
        for (int v = 0; v < NV; v++) {
            h[v] = in[v];
            NN_REG(h[v]); /* one load, not one memory operand per FMA: the load ports are the limit */
        }
        for (int r = 0; r < mb; r++)
            for (int v = 0; v < NV; v++) acc[r][v] += w[r][k] * h[v];
    }
    for (int r = 0; r < mb && K2; r++) w[r] = W2 + r * ldw2;
    for (int k = 0; k < K2; k++, in += NV)
        for (int r = 0; r < mb; r++)
            for (int v = 0; v < NV; v++) acc[r][v] += w[r][k] * in[v];
    for (int r = 0; r < mb; r++)
        for (int v = 0; v < NV; v++) {
            V a = acc[r][v];
            if (dsc) a *= (REAL)1 - dsc[r * NV + v] * dsc[r * NV + v];
            out[r * NV + v] = a;
        }
}

NN_INLINE void FN(matvec_gen)(int M, int K, const REAL *W, int ldw, int K2, const REAL *W2,
                              int ldw2, const V *in, const V *init, const REAL *bias,
                              const REAL *bias2, const V *dsc, V *out)
{
    int m = 0;
    for (; m + MVB <= M; m += MVB)
        FN(mv_block)(MVB, K, W + (ptrdiff_t)m * ldw, ldw, K2, W2 ? W2 + (ptrdiff_t)m * ldw2 : NULL,
                     ldw2, in, init ? init + m * NV : NULL, bias ? bias + m : NULL,
                     bias2 ? bias2 + m : NULL, dsc ? dsc + m * NV : NULL, out + m * NV);
    const int rem = M - m;
    const REAL *Wm = W + (ptrdiff_t)m * ldw;
    const REAL *W2m = W2 ? W2 + (ptrdiff_t)m * ldw2 : NULL;
    const V *im = init ? init + m * NV : NULL;
    const REAL *bm = bias ? bias + m : NULL;
    const REAL *b2m = bias2 ? bias2 + m : NULL;
    const V *sm = dsc ? dsc + m * NV : NULL;
    V *om = out + m * NV;
#define NN_MVB_REM(mb) FN(mv_block)(mb, K, Wm, ldw, K2, W2m, ldw2, in, im, bm, b2m, sm, om)
    switch (rem) { /* constant block heights, so the accumulators stay in registers */
#if MVB > 6
    case 11: NN_MVB_REM(11); break;
    case 10: NN_MVB_REM(10); break;
    case 9: NN_MVB_REM(9); break;
    case 8: NN_MVB_REM(8); break;
    case 7: NN_MVB_REM(7); break;
    case 6: NN_MVB_REM(6); break;
#endif
    case 5: NN_MVB_REM(5); break;
    case 4: NN_MVB_REM(4); break;
    case 3: NN_MVB_REM(3); break;
    case 2: NN_MVB_REM(2); break;
    case 1: NN_MVB_REM(1); break;
    default: break;
    }
#undef NN_MVB_REM
}

/* out (M, TILE) = init + bias + W (M, K) @ in (K, TILE); init and bias may be NULL, init may
 * be out itself. */
static void FN(matvec)(int M, int K, const REAL *W, int ldw, const V *in, const V *init,
                       const REAL *bias, V *out)
{
    FN(matvec_gen)(M, K, W, ldw, 0, NULL, 0, in, init, bias, NULL, NULL, out);
}

/* out (M, TILE) = bias + bias2 + W (M, K) @ in[:K] + W2 (M, K2) @ in[K:K + K2]: two weight
 * matrices over one stacked input in one pass. */
static void FN(matvec_cat)(int M, int K, const REAL *W, int ldw, int K2, const REAL *W2, int ldw2,
                           const V *in, const REAL *bias, const REAL *bias2, V *out)
{
    FN(matvec_gen)(M, K, W, ldw, K2, W2, ldw2, in, NULL, bias, bias2, NULL, out);
}

/* out (M, TILE) = (W (M, K) @ in (K, TILE)) * (1 - hs²), hs (M, TILE): a product of the
 * backward with the tanh derivative of the step before applied on the way out. */
static void FN(matvec_dtanh)(int M, int K, const REAL *W, int ldw, const V *in, const V *hs,
                             V *out)
{
    FN(matvec_gen)(M, K, W, ldw, 0, NULL, 0, in, NULL, NULL, NULL, hs, out);
}

/* mb x nc block of C += sum_s A_s B_sᵀ, contracting over steps s and the tile rows. */
NN_INLINE void FN(gemm_block)(const int mb, const int nc, int S, const V *A, ptrdiff_t sa,
                              const V *B, ptrdiff_t sb, REAL *C, int ldc)
{
    V acc[4][2];
    for (int r = 0; r < mb; r++)
        for (int c = 0; c < nc; c++) acc[r][c] = (V){0};
    for (int s = 0; s < S; s++, A += sa, B += sb)
        for (int v = 0; v < NV; v++) {
            /* 8 accumulators + 2 B vectors + 1 A vector in registers: one load per vector */
            V bv[2];
            for (int c = 0; c < nc; c++) {
                bv[c] = B[c * NV + v];
                NN_REG(bv[c]);
            }
            for (int r = 0; r < mb; r++) {
                V a = A[r * NV + v];
                NN_REG(a);
                for (int c = 0; c < nc; c++) acc[r][c] += a * bv[c];
            }
        }
    for (int r = 0; r < mb; r++)
        for (int c = 0; c < nc; c++) C[r * ldc + c] += FN(hsum)(acc[r][c]);
}

/* C (M, N) += sum over s < S of A_s (M, TILE) @ B_s (N, TILE)ᵀ, where A_s = A + s * sa and
 * B_s = B + s * sb (strides in vectors): a weight gradient over a chunk of time steps. */
static void FN(gemm_tn)(int M, int N, int S, const V *A, ptrdiff_t sa, const V *B, ptrdiff_t sb,
                        REAL *C, int ldc)
{
    int m = 0;
    for (; m + 4 <= M; m += 4) {
        int n = 0;
        for (; n + 2 <= N; n += 2)
            FN(gemm_block)(4, 2, S, A + m * NV, sa, B + n * NV, sb, C + (ptrdiff_t)m * ldc + n, ldc);
        for (; n < N; n++)
            FN(gemm_block)(4, 1, S, A + m * NV, sa, B + n * NV, sb, C + (ptrdiff_t)m * ldc + n, ldc);
    }
    for (; m < M; m++) {
        int n = 0;
        for (; n + 2 <= N; n += 2)
            FN(gemm_block)(1, 2, S, A + m * NV, sa, B + n * NV, sb, C + (ptrdiff_t)m * ldc + n, ldc);
        for (; n < N; n++)
            FN(gemm_block)(1, 1, S, A + m * NV, sa, B + n * NV, sb, C + (ptrdiff_t)m * ldc + n, ldc);
    }
}

/* mb x nc block of the vector accumulators Cv (ldc vectors per row) += sum_s A_s B_sᵀ, lane by
 * lane (the lanes are summed only by acc_flush). With mb = 4, nc = 3: 12 accumulator chains
 * and 7 loads per 12 FMAs. */
NN_INLINE void FN(gacc_block)(const int mb, const int nc, int S, const V *A, ptrdiff_t sa,
                              const V *B, ptrdiff_t sb, V *Cv, int ldc)
{
    V acc[4][3];
    for (int r = 0; r < mb; r++)
        for (int c = 0; c < nc; c++) acc[r][c] = Cv[r * ldc + c];
    /* the vectors of a tile row outer, the steps inner (a plain strided loop: with the vectors
     * inner, GCC unrolls them and the loads of both halves spill the accumulators) */
    for (int v = 0; v < NV; v++) {
        const V *a = A + v, *b = B + v;
        for (int s = 0; s < S; s++, a += sa, b += sb) {
            V bv[3];
            for (int c = 0; c < nc; c++) {
                bv[c] = b[c * NV];
                NN_REG(bv[c]);
            }
            for (int r = 0; r < mb; r++) {
                V av = a[r * NV];
                NN_REG(av);
                for (int c = 0; c < nc; c++) acc[r][c] += av * bv[c];
            }
        }
    }
    for (int r = 0; r < mb; r++)
        for (int c = 0; c < nc; c++) Cv[r * ldc + c] = acc[r][c];
}

NN_INLINE void FN(gacc_row)(const int mb, int N, int S, const V *A, ptrdiff_t sa, const V *B,
                            ptrdiff_t sb, V *Cv, int ldc)
{
    int n = 0;
    for (; n + 3 <= N; n += 3) FN(gacc_block)(mb, 3, S, A, sa, B + n * NV, sb, Cv + n, ldc);
    if (N - n == 2) FN(gacc_block)(mb, 2, S, A, sa, B + n * NV, sb, Cv + n, ldc);
    else if (N - n == 1) FN(gacc_block)(mb, 1, S, A, sa, B + n * NV, sb, Cv + n, ldc);
}

/* Cv (M, N vectors) += sum over s < S of A_s (M, TILE) @ B_s (N, TILE)ᵀ, lane by lane, where
 * A_s = A + s * sa and B_s = B + s * sb (strides in vectors): a weight gradient over a chunk of
 * time steps, kept as vectors until acc_flush (one horizontal sum per tile, not per chunk). */
static void FN(gemm_acc)(int M, int N, int S, const V *A, ptrdiff_t sa, const V *B, ptrdiff_t sb,
                         V *Cv)
{
    int m = 0;
    for (; m + 4 <= M; m += 4) FN(gacc_row)(4, N, S, A + m * NV, sa, B, sb, Cv + (ptrdiff_t)m * N, N);
    switch (M - m) {
    case 3: FN(gacc_row)(3, N, S, A + m * NV, sa, B, sb, Cv + (ptrdiff_t)m * N, N); break;
    case 2: FN(gacc_row)(2, N, S, A + m * NV, sa, B, sb, Cv + (ptrdiff_t)m * N, N); break;
    case 1: FN(gacc_row)(1, N, S, A + m * NV, sa, B, sb, Cv + (ptrdiff_t)m * N, N); break;
    default: break;
    }
}

/* C (M, N) += the lane sums of Cv (M, N vectors); Cv = 0. */
static void FN(acc_flush)(int M, int N, V *Cv, REAL *C, int ldc)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            C[(ptrdiff_t)m * ldc + n] += FN(hsum)(Cv[(ptrdiff_t)m * N + n]);
            Cv[(ptrdiff_t)m * N + n] = (V){0};
        }
}

/* A weight gradient C (M, N) summed over the steps of a tile: through the lane-wise vector
 * accumulators (gemm_acc, acc_flush) when they take at most NN_GACC_MAX bytes per thread, else
 * straight into C with a horizontal sum per chunk (gemm_tn). gacc_elems: the REALs the
 * accumulators take. Measured (one thread, fused steps): the accumulators win by 2-7% at H = 24
 * (19-77 KB: they stay in L1/L2 next to the chunk) and lose by 5-20% from H = 64 (tanh RNN,
 * 133 KB) to H = 128 (0.5-2 MB), hence the limit. */
#ifndef NN_GACC_MAX
#if NN_VBYTES == 64   /* measured: 256 KB makes the AVX-512 GRU step 30% faster (3H x H = 110 KB) */
#define NN_GACC_MAX (256 << 10)
#else
#define NN_GACC_MAX (96 << 10)
#endif
#endif
static inline ptrdiff_t FN(gacc_elems)(int M, int N)
{
    const ptrdiff_t e = (ptrdiff_t)M * N * VL;
    return e * (ptrdiff_t)sizeof(REAL) <= NN_GACC_MAX ? e : 0;
}

static inline void FN(gacc_begin)(int M, int N, V *gv)
{
    if (FN(gacc_elems)(M, N))
        for (ptrdiff_t e = 0; e < (ptrdiff_t)M * N; e++) gv[e] = (V){0};
}

static inline void FN(gacc_add)(int M, int N, int S, const V *A, ptrdiff_t sa, const V *B,
                                ptrdiff_t sb, V *gv, REAL *C, int ldc)
{
    if (FN(gacc_elems)(M, N))
        FN(gemm_acc)(M, N, S, A, sa, B, sb, gv);
    else
        FN(gemm_tn)(M, N, S, A, sa, B, sb, C, ldc);
}

static inline void FN(gacc_end)(int M, int N, V *gv, REAL *C, int ldc)
{
    if (FN(gacc_elems)(M, N)) FN(acc_flush)(M, N, gv, C, ldc);
}

/* acc (M vectors) += sum over s < S of A_s (M, TILE), lane by lane: a bias gradient, summed
 * across lanes by acc_flush (M, 1) once per tile (measured: 2-3% of the tanh RNN step; not
 * in the gated cells, where it measured slower). */
static void FN(colsum_acc)(int M, int S, const V *A, ptrdiff_t sa, V *acc)
{
    for (int s = 0; s < S; s++, A += sa)
        for (int m = 0; m < M; m++) {
            V a = A[m * NV];
            for (int v = 1; v < NV; v++) a += A[m * NV + v];
            acc[m] += a;
        }
}

/* out (M,) += sum over s < S and the tile rows of A_s (M, TILE): a bias gradient. */
static void FN(colsum)(int M, int S, const V *A, ptrdiff_t sa, REAL *out)
{
    for (int m = 0; m < M; m++) {
        V acc = (V){0};
        for (int s = 0; s < S; s++)
            for (int v = 0; v < NV; v++) acc += A[s * sa + m * NV + v];
        out[m] += FN(hsum)(acc);
    }
}

/* Activations over n vectors, two independent vectors per iteration for the scheduler. */
NN_INLINE void FN(tanh_inplace)(V *x, int n)
{
    int e = 0;
    for (; e + 2 <= n; e += 2) {
        V a = VTANH(x[e]), b = VTANH(x[e + 1]);
        x[e] = a;
        x[e + 1] = b;
    }
    for (; e < n; e++) x[e] = VTANH(x[e]);
}

/* the tanh RNN's activation (float: the fast rational tanh) */
NN_INLINE void FN(tanh_rnn_inplace)(V *x, int n)
{
#ifdef VTANH_P1
    /* two passes: each has a short dependency chain, so more vectors are in flight */
    for (int e = 0; e < n; e++) x[e] = VTANH_P1(x[e]);
    for (int e = 0; e < n; e++) x[e] = VTANH_P2(x[e]);
    return;
#endif
    int e = 0;
    for (; e + 2 <= n; e += 2) {
        V a = VTANH_RNN(x[e]), b = VTANH_RNN(x[e + 1]);
        x[e] = a;
        x[e + 1] = b;
    }
    for (; e < n; e++) x[e] = VTANH_RNN(x[e]);
}

/* a[:n] = tanh(a[:n]) (which = 0), sigmoid (1) or the tanh RNN's tanh (2) with the kernels'
 * vector code (for the accuracy tests). */
static void FN(act_array)(REAL *a, ptrdiff_t n, int which)
{
    for (ptrdiff_t i = 0; i < n; i += VL) {
        V v = (V){0};
        const int m = n - i < VL ? (int)(n - i) : VL;
        for (int l = 0; l < m; l++) v[l] = a[i + l];
        v = which == 1 ? VSIGMOID(v) : which == 2 ? VTANH_RNN(v) : VTANH(v);
        for (int l = 0; l < m; l++) a[i + l] = v[l];
    }
}

/* out = tanh(bias + W @ in). Measured: applying tanh in a separate pass beats applying it to
 * each register block inside the product (the block's tanh constants spill). */
static void FN(matvec_tanh)(int M, int K, const REAL *W, int ldw, const V *in, const REAL *bias,
                            V *out)
{
    FN(matvec)(M, K, W, ldw, in, NULL, bias, out);
    FN(tanh_rnn_inplace)(out, M * NV);
}

/* ------------------------------------------------------------------------------------------
 * tanh RNN. A state slot is (H + I, TILE): rows 0..H-1 hold h_t, rows H.. hold x_t, the input
 * of the step that reads h_t, so one product with W_cat = [W_hh | W_ih] (H, H + I) makes a
 * whole pre-activation and one product over the slots makes [dW_hh | dW_ih].
 * ---------------------------------------------------------------------------------------- */

/* Forward over all T steps of one tile. hbuf holds T + 1 slots if full (the backward needs
 * them), else 2 (a ring); h0 NULL means zeros. out (row b0, (T, H) per row) and hT may be NULL. */
static void FN(rnn_fwd_tile)(int T, int I, int H, int nb,
                             const REAL *x, ptrdiff_t xsb, ptrdiff_t xst, ptrdiff_t xsi,
                             const REAL *h0, ptrdiff_t h0sb, ptrdiff_t h0sj,
                             const REAL *W_cat, const REAL *bias, REAL *hbuf_, int full,
                             REAL *out, ptrdiff_t osb, ptrdiff_t ost, REAL *hT, ptrdiff_t hTsb)
{
    V *hbuf = (V *)hbuf_;
    const ptrdiff_t slot = (ptrdiff_t)(H + I) * NV;
    if (h0)
        FN(load_tile)(hbuf, H, nb, h0, h0sb, h0sj);
    else
        for (ptrdiff_t e = 0; e < (ptrdiff_t)H * NV; e++) hbuf[e] = (V){0};
    V *nxt = hbuf;
    for (int t = 0; t < T; t++) {
        V *cur = hbuf + (full ? t : (t & 1)) * slot;
        nxt = hbuf + (full ? t + 1 : ((t + 1) & 1)) * slot;
        FN(load_tile)(cur + H * NV, I, nb, x + t * xst, xsb, xsi);
        /* h_t = tanh(W_hh h_{t-1} + W_ih x_t + b) */
        FN(matvec_tanh)(H, H + I, W_cat, H + I, cur, bias, nxt);
        if (out) FN(store_tile)(out + t * ost, osb, 1, H, nb, nxt);
    }
    if (full)
        for (ptrdiff_t e = (ptrdiff_t)H * NV; e < slot; e++) nxt[e] = (V){0};
    if (hT) FN(store_tile)(hT, hTsb, 1, H, nb, nxt);
}

static inline ptrdiff_t FN(rnn_bwd_work)(int I, int H)
{
    return (ptrdiff_t)TILE * (H + I + CH * H + H) + (ptrdiff_t)VL * H + FN(gacc_elems)(H, H + I);
}

/* Backward over all T steps of one tile. hbuf: the T + 1 slots of the forward; dh: (H, TILE)
 * gradient w.r.t. h_T on entry, w.r.t. h0 on exit. dout and dx may be NULL. The weight
 * gradient [dW_hh | dW_ih] is added into dW_cat (H, H + I), the bias gradient into db (H,).
 * W_cat_T is W_catᵀ (H + I, H). */
static void FN(rnn_bwd_tile)(int T, int I, int H, int nb,
                             const REAL *dout, ptrdiff_t dsb, ptrdiff_t dst, ptrdiff_t dsj,
                             const REAL *W_cat_T, const REAL *hbuf_, REAL *dh_, REAL *work,
                             REAL *dx, ptrdiff_t dxsb, ptrdiff_t dxst, ptrdiff_t dxsi,
                             REAL *dW_cat, REAL *db)
{
    const V *hbuf = (const V *)hbuf_;
    const ptrdiff_t slot = (ptrdiff_t)(H + I) * NV, hsz = (ptrdiff_t)H * NV;
    V *dhx = (V *)work;                 /* (H + I, TILE): [dh_{t-1}; dx_t] */
    V *da = dhx + slot;                 /* (CH, H, TILE) */
    V *gv = da + CH * hsz;              /* (H, H + I) vectors: [dW_hh | dW_ih] by lane */
    V *dnext = gv + FN(gacc_elems)(H, H + I) / VL;  /* (H, TILE) */
    V *dh = (V *)dh_;
    for (ptrdiff_t e = 0; e < hsz; e++) dhx[e] = dh[e];
    V *dbv = dnext + hsz;               /* (H vectors) db by lane */
    FN(gacc_begin)(H, H + I, gv);
    for (int e = 0; e < H; e++) dbv[e] = (V){0};
    if (!dout && !dx) {
        /* No dout to add, no dx: each step's product takes the tanh derivative of the step
         * before on the way out, da_{t-1} = (W_hhᵀ da_t) (1 - h_{t-1}²), and writes da_{t-1}
         * straight into the chunk (dnext when it belongs to the next chunk, whose steps
         * overwrite this chunk's da only after its weight-gradient products). */
        const V *h = hbuf + T * slot;
        for (ptrdiff_t e = 0; e < hsz; e++) dnext[e] = dhx[e] * ((REAL)1 - h[e] * h[e]);
        for (int hi = T; hi > 0; hi -= CH) {
            const int lo = hi > CH ? hi - CH : 0;
            V *top = da + (hi - 1 - lo) * hsz;
            for (ptrdiff_t e = 0; e < hsz; e++) top[e] = dnext[e];
            for (int t = hi - 1; t >= lo; t--) {
                const V *dac = da + (t - lo) * hsz;
                if (t == 0)
                    FN(matvec)(H, H, W_cat_T, H, dac, NULL, NULL, dhx);   /* dh0 */
                else
                    FN(matvec_dtanh)(H, H, W_cat_T, H, dac, hbuf + t * slot,
                                     t > lo ? da + (t - 1 - lo) * hsz : dnext);
            }
            FN(gacc_add)(H, H + I, hi - lo, da, hsz, hbuf + lo * slot, slot, gv, dW_cat, H + I);
            FN(colsum_acc)(H, hi - lo, da, hsz, dbv);
        }
        FN(gacc_end)(H, H + I, gv, dW_cat, H + I);
        FN(acc_flush)(H, 1, dbv, db, 1);
        for (ptrdiff_t e = 0; e < hsz; e++) dh[e] = dhx[e];
        return;
    }
    for (int hi = T; hi > 0; hi -= CH) {
        const int lo = hi > CH ? hi - CH : 0;
        for (int t = hi - 1; t >= lo; t--) {
            if (dout) FN(add_tile)(dhx, H, nb, dout + t * dst, dsb, dsj);
            const V *h = hbuf + (t + 1) * slot;
            V *dac = da + (t - lo) * hsz;
            /* da_t = dh_t * (1 - h_t^2): tanh' from the saved output */
            for (ptrdiff_t e = 0; e < hsz; e++) dac[e] = dhx[e] * ((REAL)1 - h[e] * h[e]);
            /* [dh_{t-1}; dx_t] = W_catᵀ da_t */
            FN(matvec)(dx ? H + I : H, H, W_cat_T, H, dac, NULL, NULL, dhx);
            if (dx) FN(store_tile)(dx + t * dxst, dxsb, dxsi, I, nb, dhx + hsz);
        }
        /* [dW_hh | dW_ih] += da_t [h_{t-1}; x_t]ᵀ and db += da_t over the chunk */
        FN(gacc_add)(H, H + I, hi - lo, da, hsz, hbuf + lo * slot, slot, gv, dW_cat, H + I);
        FN(colsum_acc)(H, hi - lo, da, hsz, dbv);
    }
    FN(gacc_end)(H, H + I, gv, dW_cat, H + I);
    FN(acc_flush)(H, 1, dbv, db, 1);
    for (ptrdiff_t e = 0; e < hsz; e++) dh[e] = dhx[e];
}

/* Dense head and mean-squared error on the last state of one tile. hT: (H, TILE). Returns the
 * tile's sum of squared residuals; writes dh (H, TILE) = dŷ W_out with dŷ = scale (ŷ - y),
 * adds the head's gradients into dW_out (O, H) and db_out (O,). yh is (O, TILE) scratch. */
static double FN(mse_head_tile)(int H, int O, int nb, const REAL *hT_, const REAL *y,
                                ptrdiff_t ysb, ptrdiff_t yso, const REAL *W_out,
                                const REAL *W_out_T, const REAL *b_out, REAL scale, REAL *yh_,
                                REAL *dh_, REAL *dW_out, REAL *db_out)
{
    const V *hT = (const V *)hT_;
    V *yh = (V *)yh_;
    /* ŷ = W_out h_T + b_out */
    FN(matvec)(O, H, W_out, H, hT, NULL, b_out, yh);
    double loss = 0.0;
    for (int o = 0; o < O; o++)
        for (int b = 0; b < TILE; b++) {
            REAL r = 0;
            if (b < nb) {
                r = yh_[o * TILE + b] - y[b * ysb + o * yso];
                loss += (double)r * (double)r;
            }
            yh_[o * TILE + b] = scale * r;
        }
    FN(gemm_tn)(O, H, 1, yh, 0, hT, 0, dW_out, H);
    FN(colsum)(O, 1, yh, 0, db_out);
    /* dh_T = dŷ W_out */
    FN(matvec)(H, O, W_out_T, O, yh, NULL, NULL, (V *)dh_);
    return loss;
}

/* Workspace (in REAL elements) of one thread for the whole-tile entry points below. */
static inline ptrdiff_t FN(rnn_ws)(int T, int I, int H, int O, int mode)
{
    const ptrdiff_t slot = (ptrdiff_t)(H + I) * TILE;
    if (mode == 0) /* forward: a ring of 2 slots */
        return 2 * slot;
    /* backward / train step: all T + 1 slots, dh, ŷ and the backward's work */
    return (T + 1) * slot + (ptrdiff_t)H * TILE + (ptrdiff_t)O * TILE + FN(rnn_bwd_work)(I, H);
}

/* Separate backward of one tile: gathers h_0..h_T from h0 and out (as written by the forward)
 * and x, runs the backward and stores dh0 (row b0). dh_T may be NULL. */
static void FN(rnn_backward_tile)(int T, int I, int H, int nb,
                                  const REAL *x, ptrdiff_t xsb, ptrdiff_t xst, ptrdiff_t xsi,
                                  const REAL *h0, ptrdiff_t h0sb, ptrdiff_t h0sj,
                                  const REAL *out, ptrdiff_t osb, ptrdiff_t ost, ptrdiff_t osj,
                                  const REAL *dout, ptrdiff_t dsb, ptrdiff_t dst, ptrdiff_t dsj,
                                  const REAL *dhT, ptrdiff_t dhsb, ptrdiff_t dhsj,
                                  const REAL *W_cat_T, REAL *ws,
                                  REAL *dx, ptrdiff_t dxsb, ptrdiff_t dxst, ptrdiff_t dxsi,
                                  REAL *dh0, ptrdiff_t dh0sb, REAL *dW_cat, REAL *db)
{
    const ptrdiff_t slot = (ptrdiff_t)(H + I) * TILE, hsz = (ptrdiff_t)H * TILE;
    REAL *hbuf = ws, *dh = hbuf + (T + 1) * slot, *work = dh + hsz;
    if (h0)
        FN(load_tile)((V *)hbuf, H, nb, h0, h0sb, h0sj);
    else
        for (ptrdiff_t e = 0; e < hsz; e++) hbuf[e] = 0;
    for (int t = 0; t < T; t++) {
        FN(load_tile)((V *)(hbuf + t * slot + hsz), I, nb, x + t * xst, xsb, xsi);
        FN(load_tile)((V *)(hbuf + (t + 1) * slot), H, nb, out + t * ost, osb, osj);
    }
    if (dhT)
        FN(load_tile)((V *)dh, H, nb, dhT, dhsb, dhsj);
    else
        for (ptrdiff_t e = 0; e < hsz; e++) dh[e] = 0;
    FN(rnn_bwd_tile)(T, I, H, nb, dout, dsb, dst, dsj, W_cat_T, hbuf, dh, work,
                     dx, dxsb, dxst, dxsi, dW_cat, db);
    FN(store_tile)(dh0, dh0sb, 1, H, nb, (const V *)dh);
}

/* Fused training step of one tile: forward over T steps keeping the tile's states, dense head
 * and MSE on h_T, backward. Returns the tile's sum of squared residuals. */
static double FN(rnn_train_tile)(int T, int I, int H, int O, int nb,
                                 const REAL *x, ptrdiff_t xsb, ptrdiff_t xst, ptrdiff_t xsi,
                                 const REAL *h0, ptrdiff_t h0sb, ptrdiff_t h0sj,
                                 const REAL *y, ptrdiff_t ysb, ptrdiff_t yso,
                                 const REAL *W_cat, const REAL *bias, const REAL *W_cat_T,
                                 const REAL *W_out, const REAL *W_out_T, const REAL *b_out,
                                 REAL scale, REAL *ws, REAL *hT, ptrdiff_t hTsb,
                                 REAL *dh0, ptrdiff_t dh0sb, REAL *dW_cat, REAL *db,
                                 REAL *dW_out, REAL *db_out)
{
    const ptrdiff_t slot = (ptrdiff_t)(H + I) * TILE;
    REAL *hbuf = ws, *dh = hbuf + (T + 1) * slot, *yh = dh + (ptrdiff_t)H * TILE;
    REAL *work = yh + (ptrdiff_t)O * TILE;
    FN(rnn_fwd_tile)(T, I, H, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, W_cat, bias, hbuf, 1,
                     NULL, 0, 0, hT, hTsb);
    double loss = FN(mse_head_tile)(H, O, nb, hbuf + T * slot, y, ysb, yso, W_out, W_out_T, b_out,
                                    scale, yh, dh, dW_out, db_out);
    FN(rnn_bwd_tile)(T, I, H, nb, NULL, 0, 0, 0, W_cat_T, hbuf, dh, work, NULL, 0, 0, 0, dW_cat, db);
    FN(store_tile)(dh0, dh0sb, 1, H, nb, (const V *)dh);
    return loss;
}

/* ------------------------------------------------------------------------------------------
 * Shared by GRU and LSTM: the tile buffer keeps, per step, the state slot [h_t; x_t] (as the
 * RNN) and a record of the activated gates, everything the backward reads (and nothing else).
 * ---------------------------------------------------------------------------------------- */

/* a (n vectors) = sigmoid(a) */
NN_INLINE void FN(sigmoid_vec)(V *a, ptrdiff_t n)
{
    ptrdiff_t e = 0;
    for (; e + 2 <= n; e += 2) {
        V p = VSIGMOID(a[e]), q = VSIGMOID(a[e + 1]);
        a[e] = p;
        a[e + 1] = q;
    }
    for (; e < n; e++) a[e] = VSIGMOID(a[e]);
}

/* ------------------------------------------------------------------------------------------
 * GRU (r, z, n). Record per step: r, z, n, hn = W_hn h_{t-1} + b_hn, each (H, TILE).
 * ---------------------------------------------------------------------------------------- */
static inline ptrdiff_t FN(gru_tilebuf)(int T, int I, int H)
{
    return ((ptrdiff_t)(T + 1) * (H + I) + (ptrdiff_t)T * 4 * H) * TILE;
}

static inline ptrdiff_t FN(gru_work)(int I, int H, int O)
{
    return (ptrdiff_t)TILE * (H + 6 * CH * H + I + O) + FN(gacc_elems)(3 * H, H)
           + FN(gacc_elems)(3 * H, I);
}

/* Forward of one tile. full: into buf (gru_tilebuf: every state slot and gate record, for the
 * backward); else a ring of 2 slots and one record (gru_ringbuf: inference, the same arithmetic).
 * out/hT may be NULL. Returns the last state slot. */
static V *FN(gru_fwd)(int T, int I, int H, int nb,
                      const REAL *x, ptrdiff_t xsb, ptrdiff_t xst, ptrdiff_t xsi,
                      const REAL *h0, ptrdiff_t h0sb, ptrdiff_t h0sj,
                      const REAL *W_ih, const REAL *W_hh, const REAL *b_ih,
                      const REAL *b_hh, REAL *buf, int full,
                      REAL *out, ptrdiff_t osb, ptrdiff_t ost, REAL *hT, ptrdiff_t hTsb)
{
    const ptrdiff_t slot = (ptrdiff_t)(H + I) * NV, hsz = (ptrdiff_t)H * NV;
    V *hb = (V *)buf, *rec = hb + (full ? T + 1 : 2) * slot;
    if (h0)
        FN(load_tile)(hb, H, nb, h0, h0sb, h0sj);
    else
        for (ptrdiff_t e = 0; e < hsz; e++) hb[e] = (V){0};
    V *nxt = hb;
    for (int t = 0; t < T; t++) {
        V *cur = hb + (full ? t : (t & 1)) * slot;
        nxt = hb + (full ? t + 1 : ((t + 1) & 1)) * slot;
        V *r = rec + (full ? t : 0) * 4 * hsz, *z = r + hsz, *n = z + hsz, *hn = n + hsz;
        FN(load_tile)(cur + hsz, I, nb, x + t * xst, xsb, xsi);
        /* r, z = sigmoid(W_h{r,z} h_{t-1} + W_i{r,z} x_t + b_i{r,z} + b_h{r,z}): one product over
         * the slot [h_{t-1}; x_t] straight into the record, hn and n straight into theirs (a
         * separate W_ih x_t product into scratch and a pass adding the two measured 1-11 % slower
         * inference and 3-6 % slower training steps, reference workload, alternating builds) */
        FN(matvec_cat)(2 * H, H, W_hh, H, I, W_ih, I, cur, b_ih, b_hh, r);
        FN(sigmoid_vec)(r, 2 * hsz);
        /* hn = W_hn h_{t-1} + b_hn, n = tanh(W_in x_t + b_in + r hn) */
        FN(matvec)(H, H, W_hh + (ptrdiff_t)2 * H * H, H, cur, NULL, b_hh + 2 * H, hn);
        FN(matvec)(H, I, W_ih + (ptrdiff_t)2 * H * I, I, cur + hsz, NULL, b_ih + 2 * H, n);
        for (ptrdiff_t e = 0; e < hsz; e++) n[e] += r[e] * hn[e];
        FN(tanh_inplace)(n, (int)hsz);
        /* h_t = (1 - z) n + z h_{t-1} */
        for (ptrdiff_t e = 0; e < hsz; e++) nxt[e] = n[e] + z[e] * (cur[e] - n[e]);
        if (out) FN(store_tile)(out + t * ost, osb, 1, H, nb, nxt);
    }
    if (full)
        for (ptrdiff_t e = hsz; e < slot; e++) nxt[e] = (V){0};
    if (hT) FN(store_tile)(hT, hTsb, 1, H, nb, nxt);
    return nxt;
}

static void FN(gru_forward_tile)(int T, int I, int H, int nb,
                                 const REAL *x, ptrdiff_t xsb, ptrdiff_t xst, ptrdiff_t xsi,
                                 const REAL *h0, ptrdiff_t h0sb, ptrdiff_t h0sj,
                                 const REAL *W_ih, const REAL *W_hh, const REAL *b_ih,
                                 const REAL *b_hh, REAL *buf,
                                 REAL *out, ptrdiff_t osb, ptrdiff_t ost, REAL *hT, ptrdiff_t hTsb)
{
    FN(gru_fwd)(T, I, H, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, W_ih, W_hh, b_ih, b_hh, buf, 1,
                out, osb, ost, hT, hTsb);
}

/* Backward of one tile from buf; dh (H, TILE): gradient w.r.t. h_T in, w.r.t. h0 out. */
static void FN(gru_bwd_tile)(int T, int I, int H, int nb,
                             const REAL *dout, ptrdiff_t dsb, ptrdiff_t dst, ptrdiff_t dsj,
                             const REAL *W_ih_T, const REAL *W_hh_T, const REAL *buf, V *dh,
                             REAL *work, V *gv, REAL *dx, ptrdiff_t dxsb, ptrdiff_t dxst,
                             ptrdiff_t dxsi, REAL *dW_ih, REAL *dW_hh, REAL *db_ih, REAL *db_hh)
{
    const ptrdiff_t slot = (ptrdiff_t)(H + I) * NV, hsz = (ptrdiff_t)H * NV, g3 = 3 * hsz;
    const V *hb = (const V *)buf, *rec = hb + (T + 1) * slot;
    V *dgi = (V *)work, *dgh = dgi + CH * g3, *dxt = dgh + CH * g3;
    /* gv: [dW_hh (3H, H) | dW_ih (3H, I)] as lane-wise vector sums, flushed at the end */
    V *gv_hh = gv, *gv_ih = gv + FN(gacc_elems)(3 * H, H) / VL;
    FN(gacc_begin)(3 * H, H, gv_hh);
    FN(gacc_begin)(3 * H, I, gv_ih);
    for (int hi = T; hi > 0; hi -= CH) {
        const int lo = hi > CH ? hi - CH : 0;
        for (int t = hi - 1; t >= lo; t--) {
            if (dout) FN(add_tile)(dh, H, nb, dout + t * dst, dsb, dsj);
            const V *hp = hb + t * slot;
            const V *r = rec + t * 4 * hsz, *z = r + hsz, *n = z + hsz, *hn = n + hsz;
            V *gi = dgi + (t - lo) * g3, *gh = dgh + (t - lo) * g3;
            for (ptrdiff_t e = 0; e < hsz; e++) {
                const V d = dh[e];
                const V dan = d * ((REAL)1 - z[e]) * ((REAL)1 - n[e] * n[e]);
                const V dar = dan * hn[e] * r[e] * ((REAL)1 - r[e]);
                const V daz = d * (hp[e] - n[e]) * z[e] * ((REAL)1 - z[e]);
                gi[e] = dar; gi[hsz + e] = daz; gi[2 * hsz + e] = dan;
                gh[e] = dar; gh[hsz + e] = daz; gh[2 * hsz + e] = dan * r[e];
                dh[e] = d * z[e];
            }
            /* dh_{t-1} = dh_t z_t + W_hhᵀ dgh_t;  dx_t = W_ihᵀ dgi_t */
            FN(matvec)(H, 3 * H, W_hh_T, 3 * H, gh, dh, NULL, dh);
            if (dx) {
                FN(matvec)(I, 3 * H, W_ih_T, 3 * H, gi, NULL, NULL, dxt);
                FN(store_tile)(dx + t * dxst, dxsb, dxsi, I, nb, dxt);
            }
        }
        FN(gacc_add)(3 * H, H, hi - lo, dgh, g3, hb + lo * slot, slot, gv_hh, dW_hh, H);
        FN(gacc_add)(3 * H, I, hi - lo, dgi, g3, hb + lo * slot + hsz, slot, gv_ih, dW_ih, I);
        FN(colsum)(3 * H, hi - lo, dgi, g3, db_ih);
        FN(colsum)(3 * H, hi - lo, dgh, g3, db_hh);
    }
    FN(gacc_end)(3 * H, H, gv_hh, dW_hh, H);
    FN(gacc_end)(3 * H, I, gv_ih, dW_ih, I);
}

static void FN(gru_backward_tile)(int T, int I, int H, int nb,
                                  const REAL *dout, ptrdiff_t dsb, ptrdiff_t dst, ptrdiff_t dsj,
                                  const REAL *dhT, ptrdiff_t dhsb, ptrdiff_t dhsj,
                                  const REAL *W_ih_T, const REAL *W_hh_T, const REAL *buf,
                                  REAL *work, REAL *dx, ptrdiff_t dxsb, ptrdiff_t dxst, ptrdiff_t dxsi,
                                  REAL *dh0, ptrdiff_t dh0sb,
                                  REAL *dW_ih, REAL *dW_hh, REAL *db_ih, REAL *db_hh)
{
    V *dh = (V *)work;
    if (dhT)
        FN(load_tile)(dh, H, nb, dhT, dhsb, dhsj);
    else
        for (ptrdiff_t e = 0; e < (ptrdiff_t)H * NV; e++) dh[e] = (V){0};
    REAL *bw = work + (ptrdiff_t)H * TILE;
    FN(gru_bwd_tile)(T, I, H, nb, dout, dsb, dst, dsj, W_ih_T, W_hh_T, buf, dh, bw,
                     (V *)(bw + (ptrdiff_t)TILE * (6 * CH * H + I)), dx, dxsb, dxst, dxsi,
                     dW_ih, dW_hh, db_ih, db_hh);
    FN(store_tile)(dh0, dh0sb, 1, H, nb, dh);
}

static double FN(gru_train_tile)(int T, int I, int H, int O, int nb,
                                 const REAL *x, ptrdiff_t xsb, ptrdiff_t xst, ptrdiff_t xsi,
                                 const REAL *h0, ptrdiff_t h0sb, ptrdiff_t h0sj,
                                 const REAL *y, ptrdiff_t ysb, ptrdiff_t yso,
                                 const REAL *W_ih, const REAL *W_hh, const REAL *b_ih,
                                 const REAL *b_hh, const REAL *W_ih_T, const REAL *W_hh_T,
                                 const REAL *W_out, const REAL *W_out_T, const REAL *b_out,
                                 REAL scale, REAL *ws, REAL *hT, ptrdiff_t hTsb,
                                 REAL *dh0, ptrdiff_t dh0sb, REAL *dW_ih, REAL *dW_hh,
                                 REAL *db_ih, REAL *db_hh, REAL *dW_out, REAL *db_out)
{
    const ptrdiff_t slot = (ptrdiff_t)(H + I) * TILE;
    REAL *buf = ws, *dh = buf + FN(gru_tilebuf)(T, I, H), *work = dh + (ptrdiff_t)H * TILE;
    REAL *yh = work + (ptrdiff_t)TILE * (6 * CH * H + I), *gv = yh + (ptrdiff_t)O * TILE;
    FN(gru_forward_tile)(T, I, H, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, W_ih, W_hh, b_ih, b_hh,
                         buf, NULL, 0, 0, hT, hTsb);
    double loss = FN(mse_head_tile)(H, O, nb, buf + T * slot, y, ysb, yso, W_out, W_out_T, b_out,
                                    scale, yh, dh, dW_out, db_out);
    FN(gru_bwd_tile)(T, I, H, nb, NULL, 0, 0, 0, W_ih_T, W_hh_T, buf, (V *)dh, work,
                     (V *)gv, NULL, 0, 0, 0,
                     dW_ih, dW_hh, db_ih, db_hh);
    FN(store_tile)(dh0, dh0sb, 1, H, nb, (const V *)dh);
    return loss;
}

/* ------------------------------------------------------------------------------------------
 * LSTM (i, f, g, o). Besides the state slots, the buffer keeps c_0..c_T and per step the
 * record i, f, g, o, tanh(c_t), each (H, TILE).
 * ---------------------------------------------------------------------------------------- */
static inline ptrdiff_t FN(lstm_tilebuf)(int T, int I, int H)
{
    return ((ptrdiff_t)(T + 1) * (2 * H + I) + (ptrdiff_t)T * 5 * H) * TILE;
}

static inline ptrdiff_t FN(lstm_work)(int I, int H, int O)
{
    return (ptrdiff_t)TILE * (3 * H + I + 4 * CH * H + CH + O) + FN(gacc_elems)(4 * H, H + I);
}

/* Forward of one tile. full: into buf (lstm_tilebuf, for the backward); else rings of 2 state
 * slots and 2 cell states and one record (lstm_ringbuf: inference, the same arithmetic).
 * Returns the last state slot. */
static V *FN(lstm_fwd)(int T, int I, int H, int nb,
                       const REAL *x, ptrdiff_t xsb, ptrdiff_t xst, ptrdiff_t xsi,
                       const REAL *h0, ptrdiff_t h0sb, ptrdiff_t h0sj,
                       const REAL *c0, ptrdiff_t c0sb, ptrdiff_t c0sj,
                       const REAL *W_cat, const REAL *bias, REAL *buf, int full,
                       REAL *out, ptrdiff_t osb, ptrdiff_t ost,
                       REAL *hT, ptrdiff_t hTsb, REAL *cT, ptrdiff_t cTsb)
{
    const ptrdiff_t slot = (ptrdiff_t)(H + I) * NV, hsz = (ptrdiff_t)H * NV;
    const int ns = full ? T + 1 : 2;
    V *hb = (V *)buf, *cb = hb + ns * slot, *rec = cb + ns * hsz;
    if (h0)
        FN(load_tile)(hb, H, nb, h0, h0sb, h0sj);
    else
        for (ptrdiff_t e = 0; e < hsz; e++) hb[e] = (V){0};
    if (c0)
        FN(load_tile)(cb, H, nb, c0, c0sb, c0sj);
    else
        for (ptrdiff_t e = 0; e < hsz; e++) cb[e] = (V){0};
    V *nxt = hb, *cn = cb;
    for (int t = 0; t < T; t++) {
        const int ts = full ? t : (t & 1), tn = full ? t + 1 : ((t + 1) & 1);
        V *cur = hb + ts * slot, *c = cb + ts * hsz;
        nxt = hb + tn * slot;
        cn = cb + tn * hsz;
        V *gi = rec + (full ? t : 0) * 5 * hsz, *gf = gi + hsz, *gg = gf + hsz, *go = gg + hsz, *tc = go + hsz;
        FN(load_tile)(cur + hsz, I, nb, x + t * xst, xsb, xsi);
        /* [i f g o] = W_hh h_{t-1} + W_ih x_t + b, then σ, σ, tanh, σ */
        FN(matvec)(4 * H, H + I, W_cat, H + I, cur, NULL, bias, gi);
        FN(sigmoid_vec)(gi, 2 * hsz);
        FN(tanh_inplace)(gg, (int)hsz);
        FN(sigmoid_vec)(go, hsz);
        for (ptrdiff_t e = 0; e < hsz; e++) tc[e] = cn[e] = gf[e] * c[e] + gi[e] * gg[e];
        FN(tanh_inplace)(tc, (int)hsz);
        for (ptrdiff_t e = 0; e < hsz; e++) nxt[e] = go[e] * tc[e];
        if (out) FN(store_tile)(out + t * ost, osb, 1, H, nb, nxt);
    }
    if (full)
        for (ptrdiff_t e = hsz; e < slot; e++) nxt[e] = (V){0};
    if (hT) FN(store_tile)(hT, hTsb, 1, H, nb, nxt);
    if (cT) FN(store_tile)(cT, cTsb, 1, H, nb, cn);
    return nxt;
}

static void FN(lstm_forward_tile)(int T, int I, int H, int nb,
                                  const REAL *x, ptrdiff_t xsb, ptrdiff_t xst, ptrdiff_t xsi,
                                  const REAL *h0, ptrdiff_t h0sb, ptrdiff_t h0sj,
                                  const REAL *c0, ptrdiff_t c0sb, ptrdiff_t c0sj,
                                  const REAL *W_cat, const REAL *bias, REAL *buf,
                                  REAL *out, ptrdiff_t osb, ptrdiff_t ost,
                                  REAL *hT, ptrdiff_t hTsb, REAL *cT, ptrdiff_t cTsb)
{
    FN(lstm_fwd)(T, I, H, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, c0, c0sb, c0sj, W_cat, bias, buf, 1,
                 out, osb, ost, hT, hTsb, cT, cTsb);
}

/* dh, dc (H, TILE): gradients w.r.t. h_T, c_T in; w.r.t. h0, c0 out. */
static void FN(lstm_bwd_tile)(int T, int I, int H, int nb,
                              const REAL *dout, ptrdiff_t dsb, ptrdiff_t dst, ptrdiff_t dsj,
                              const REAL *W_cat_T, const REAL *buf, V *dh, V *dc, REAL *work,
                              REAL *dx, ptrdiff_t dxsb, ptrdiff_t dxst, ptrdiff_t dxsi,
                              REAL *dW_cat, REAL *db)
{
    const ptrdiff_t slot = (ptrdiff_t)(H + I) * NV, hsz = (ptrdiff_t)H * NV, g4 = 4 * hsz;
    const V *hb = (const V *)buf, *cb = hb + (T + 1) * slot, *rec = cb + (T + 1) * hsz;
    V *dhx = (V *)work, *da = dhx + slot;
    /* per-step stride of the gate gradients: one row (64 bytes) more than 4H rows; at 4H rows
     * (a multiple of 32 rows for H = 24) a chunk's steps fall into 2 L1 sets (measured 5%) */
    const ptrdiff_t gs = g4 + NV;
    V *gv = da + CH * gs; /* dW_cat (4H, H + I) as lane-wise vector sums, flushed at the end */
    FN(gacc_begin)(4 * H, H + I, gv);
    for (ptrdiff_t e = 0; e < hsz; e++) dhx[e] = dh[e];
    for (int hi = T; hi > 0; hi -= CH) {
        const int lo = hi > CH ? hi - CH : 0;
        for (int t = hi - 1; t >= lo; t--) {
            if (dout) FN(add_tile)(dhx, H, nb, dout + t * dst, dsb, dsj);
            const V *gi = rec + t * 5 * hsz, *gf = gi + hsz, *gg = gf + hsz, *go = gg + hsz;
            const V *tc = go + hsz, *c = cb + t * hsz;
            V *a = da + (t - lo) * gs;
            for (ptrdiff_t e = 0; e < hsz; e++) {
                const V d = dhx[e];
                const V dct = dc[e] + d * go[e] * ((REAL)1 - tc[e] * tc[e]);
                a[e] = dct * gg[e] * gi[e] * ((REAL)1 - gi[e]);
                a[hsz + e] = dct * c[e] * gf[e] * ((REAL)1 - gf[e]);
                a[2 * hsz + e] = dct * gi[e] * ((REAL)1 - gg[e] * gg[e]);
                a[3 * hsz + e] = d * tc[e] * go[e] * ((REAL)1 - go[e]);
                dc[e] = dct * gf[e];
            }
            /* [dh_{t-1}; dx_t] = W_catᵀ da_t */
            FN(matvec)(dx ? H + I : H, 4 * H, W_cat_T, 4 * H, a, NULL, NULL, dhx);
            if (dx) FN(store_tile)(dx + t * dxst, dxsb, dxsi, I, nb, dhx + hsz);
        }
        FN(gacc_add)(4 * H, H + I, hi - lo, da, gs, hb + lo * slot, slot, gv, dW_cat, H + I);
        FN(colsum)(4 * H, hi - lo, da, gs, db);
    }
    FN(gacc_end)(4 * H, H + I, gv, dW_cat, H + I);
    for (ptrdiff_t e = 0; e < hsz; e++) dh[e] = dhx[e];
}

static void FN(lstm_backward_tile)(int T, int I, int H, int nb,
                                   const REAL *dout, ptrdiff_t dsb, ptrdiff_t dst, ptrdiff_t dsj,
                                   const REAL *dhT, ptrdiff_t dhsb, ptrdiff_t dhsj,
                                   const REAL *dcT, ptrdiff_t dcsb, ptrdiff_t dcsj,
                                   const REAL *W_cat_T, const REAL *buf, REAL *work,
                                   REAL *dx, ptrdiff_t dxsb, ptrdiff_t dxst, ptrdiff_t dxsi,
                                   REAL *dh0, ptrdiff_t dh0sb, REAL *dc0, ptrdiff_t dc0sb,
                                   REAL *dW_cat, REAL *db)
{
    const ptrdiff_t hsz = (ptrdiff_t)H * NV;
    V *dh = (V *)work, *dc = dh + hsz;
    if (dhT)
        FN(load_tile)(dh, H, nb, dhT, dhsb, dhsj);
    else
        for (ptrdiff_t e = 0; e < hsz; e++) dh[e] = (V){0};
    if (dcT)
        FN(load_tile)(dc, H, nb, dcT, dcsb, dcsj);
    else
        for (ptrdiff_t e = 0; e < hsz; e++) dc[e] = (V){0};
    FN(lstm_bwd_tile)(T, I, H, nb, dout, dsb, dst, dsj, W_cat_T, buf, dh, dc,
                      work + 2 * (ptrdiff_t)H * TILE, dx, dxsb, dxst, dxsi, dW_cat, db);
    FN(store_tile)(dh0, dh0sb, 1, H, nb, dh);
    FN(store_tile)(dc0, dc0sb, 1, H, nb, dc);
}

static double FN(lstm_train_tile)(int T, int I, int H, int O, int nb,
                                  const REAL *x, ptrdiff_t xsb, ptrdiff_t xst, ptrdiff_t xsi,
                                  const REAL *h0, ptrdiff_t h0sb, ptrdiff_t h0sj,
                                  const REAL *c0, ptrdiff_t c0sb, ptrdiff_t c0sj,
                                  const REAL *y, ptrdiff_t ysb, ptrdiff_t yso,
                                  const REAL *W_cat, const REAL *bias, const REAL *W_cat_T,
                                  const REAL *W_out, const REAL *W_out_T, const REAL *b_out,
                                  REAL scale, REAL *ws, REAL *hT, ptrdiff_t hTsb,
                                  REAL *cT, ptrdiff_t cTsb, REAL *dh0, ptrdiff_t dh0sb,
                                  REAL *dc0, ptrdiff_t dc0sb, REAL *dW_cat, REAL *db,
                                  REAL *dW_out, REAL *db_out)
{
    const ptrdiff_t slot = (ptrdiff_t)(H + I) * TILE, hsz = (ptrdiff_t)H * TILE;
    REAL *buf = ws, *dh = buf + FN(lstm_tilebuf)(T, I, H), *dc = dh + hsz, *yh = dc + hsz;
    REAL *work = yh + (ptrdiff_t)O * TILE;
    FN(lstm_forward_tile)(T, I, H, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, c0, c0sb, c0sj, W_cat,
                          bias, buf, NULL, 0, 0, hT, hTsb, cT, cTsb);
    double loss = FN(mse_head_tile)(H, O, nb, buf + T * slot, y, ysb, yso, W_out, W_out_T, b_out,
                                    scale, yh, dh, dW_out, db_out);
    for (ptrdiff_t e = 0; e < hsz; e++) dc[e] = 0;
    FN(lstm_bwd_tile)(T, I, H, nb, NULL, 0, 0, 0, W_cat_T, buf, (V *)dh, (V *)dc, work,
                      NULL, 0, 0, 0, dW_cat, db);
    FN(store_tile)(dh0, dh0sb, 1, H, nb, (const V *)dh);
    FN(store_tile)(dc0, dc0sb, 1, H, nb, (const V *)dc);
    return loss;
}

/* ------------------------------------------------------------------------------------------
 * Inference: the forward of any kind without the backward's buffer (rings of 2 state slots, one
 * gate record), then the dense head on the last state, fused. Same arithmetic as the training
 * forward, step for step, so the same results. kind: 0 tanh RNN, 1 GRU, 2 LSTM.
 * ---------------------------------------------------------------------------------------- */
static inline ptrdiff_t FN(infer_ws)(int kind, int I, int H, int O)
{
    const ptrdiff_t slot = (ptrdiff_t)(H + I) * TILE, hsz = (ptrdiff_t)H * TILE;
    const ptrdiff_t head = (ptrdiff_t)O * TILE;
    if (kind == 0) return 2 * slot + head;
    if (kind == 1) return 2 * slot + 4 * hsz + head;             /* ring, record */
    return 2 * slot + 2 * hsz + 5 * hsz + head;                   /* ring, cells, record */
}

/* yhat (row b0: O values at stride ysb) = W_out h_T + b_out when W_out is not NULL; hT, cT
 * (LSTM) may be NULL. W_a, b_a: W_cat and its bias (RNN: b_ih + b_hh; LSTM: likewise), or
 * W_ih, b_ih with W_b, b_b = W_hh, b_hh (GRU). */
static void FN(infer_tile)(int kind, int T, int I, int H, int O, int nb,
                           const REAL *x, ptrdiff_t xsb, ptrdiff_t xst, ptrdiff_t xsi,
                           const REAL *h0, ptrdiff_t h0sb, ptrdiff_t h0sj,
                           const REAL *c0, ptrdiff_t c0sb, ptrdiff_t c0sj,
                           const REAL *W_a, const REAL *W_b, const REAL *b_a, const REAL *b_b,
                           const REAL *W_out, const REAL *b_out, REAL *ws,
                           REAL *yhat, ptrdiff_t ysb, REAL *hT, ptrdiff_t hTsb, REAL *cT, ptrdiff_t cTsb)
{
    const ptrdiff_t slot = (ptrdiff_t)(H + I) * TILE, hsz = (ptrdiff_t)H * TILE;
    const V *last;
    REAL *yh;
    if (kind == 0) {
        FN(rnn_fwd_tile)(T, I, H, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, W_a, b_a, ws, 0,
                         NULL, 0, 0, hT, hTsb);
        last = (const V *)(ws + (ptrdiff_t)(T & 1) * slot);
        yh = ws + 2 * slot;
    } else if (kind == 1) {
        last = FN(gru_fwd)(T, I, H, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, W_a, W_b, b_a, b_b, ws, 0,
                           NULL, 0, 0, hT, hTsb);
        yh = ws + 2 * slot + 4 * hsz;
    } else {
        last = FN(lstm_fwd)(T, I, H, nb, x, xsb, xst, xsi, h0, h0sb, h0sj, c0, c0sb, c0sj, W_a, b_a,
                            ws, 0, NULL, 0, 0, hT, hTsb, cT, cTsb);
        yh = ws + 2 * slot + 7 * hsz;
    }
    if (W_out) {
        /* ŷ = W_out h_T + b_out, as the training step's head */
        FN(matvec)(O, H, W_out, H, last, NULL, b_out, (V *)yh);
        FN(store_tile)(yhat, ysb, 1, O, nb, (const V *)yh);
    }
}

#undef FN
#undef NV
#undef TILE
#undef MVB
#undef CH
