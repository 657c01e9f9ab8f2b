# C declarations of the tile primitives in _tile.h (float and double instances).
# Keep in step with _tile_impl.h; the double block is the float block with the types swapped.

cdef extern from "_tile.h" nogil:
    unsigned int nn_ftz_on()
    void nn_csr_restore(unsigned int old)
    char *nn_align64(char *p)
    const char *nn_tanh_backend()
    int nn_native_build()
    int nn_debug_build()
    int nn_vector_bytes()
    int nn_peak_bytes()
    int nn_peak_chains()
    double nn_fma_loop_f32(long iters, float a, float b)
    double nn_fma_loop_f64(long iters, double a, double b)

    int tile_rows_f32()
    void act_array_f32(float *a, Py_ssize_t n, int which)
    Py_ssize_t rnn_ws_f32(int T, int I, int H, int O, int mode)
    void rnn_fwd_tile_f32(int T, int I, int H, int nb,
                          const float *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                          const float *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                          const float *W_cat, const float *bias, float *hbuf, int full,
                          float *out, Py_ssize_t osb, Py_ssize_t ost, float *hT, Py_ssize_t hTsb)
    void rnn_backward_tile_f32(int T, int I, int H, int nb,
                               const float *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                               const float *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                               const float *out, Py_ssize_t osb, Py_ssize_t ost, Py_ssize_t osj,
                               const float *dout, Py_ssize_t dsb, Py_ssize_t dst, Py_ssize_t dsj,
                               const float *dhT, Py_ssize_t dhsb, Py_ssize_t dhsj,
                               const float *W_cat_T, float *ws,
                               float *dx, Py_ssize_t dxsb, Py_ssize_t dxst, Py_ssize_t dxsi,
                               float *dh0, Py_ssize_t dh0sb, float *dW_cat, float *db)
    double rnn_train_tile_f32(int T, int I, int H, int O, int nb,
                              const float *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                              const float *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                              const float *y, Py_ssize_t ysb, Py_ssize_t yso,
                              const float *W_cat, const float *bias, const float *W_cat_T,
                              const float *W_out, const float *W_out_T, const float *b_out,
                              float scale, float *ws, float *hT, Py_ssize_t hTsb,
                              float *dh0, Py_ssize_t dh0sb, float *dW_cat, float *db,
                              float *dW_out, float *db_out)

    int tile_rows_f64()
    void act_array_f64(double *a, Py_ssize_t n, int which)
    Py_ssize_t rnn_ws_f64(int T, int I, int H, int O, int mode)
    void rnn_fwd_tile_f64(int T, int I, int H, int nb,
                          const double *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                          const double *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                          const double *W_cat, const double *bias, double *hbuf, int full,
                          double *out, Py_ssize_t osb, Py_ssize_t ost, double *hT, Py_ssize_t hTsb)
    void rnn_backward_tile_f64(int T, int I, int H, int nb,
                               const double *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                               const double *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                               const double *out, Py_ssize_t osb, Py_ssize_t ost, Py_ssize_t osj,
                               const double *dout, Py_ssize_t dsb, Py_ssize_t dst, Py_ssize_t dsj,
                               const double *dhT, Py_ssize_t dhsb, Py_ssize_t dhsj,
                               const double *W_cat_T, double *ws,
                               double *dx, Py_ssize_t dxsb, Py_ssize_t dxst, Py_ssize_t dxsi,
                               double *dh0, Py_ssize_t dh0sb, double *dW_cat, double *db)
    double rnn_train_tile_f64(int T, int I, int H, int O, int nb,
                              const double *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                              const double *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                              const double *y, Py_ssize_t ysb, Py_ssize_t yso,
                              const double *W_cat, const double *bias, const double *W_cat_T,
                              const double *W_out, const double *W_out_T, const double *b_out,
                              double scale, double *ws, double *hT, Py_ssize_t hTsb,
                              double *dh0, Py_ssize_t dh0sb, double *dW_cat, double *db,
                              double *dW_out, double *db_out)

    Py_ssize_t gru_tilebuf_f32(int T, int I, int H)
    Py_ssize_t gru_work_f32(int I, int H, int O)
    void gru_forward_tile_f32(int T, int I, int H, int nb,
                              const float *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                              const float *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                              const float *W_ih, const float *W_hh, const float *b_ih,
                              const float *b_hh, float *buf,
                              float *out, Py_ssize_t osb, Py_ssize_t ost, float *hT, Py_ssize_t hTsb)
    void gru_backward_tile_f32(int T, int I, int H, int nb,
                               const float *dout, Py_ssize_t dsb, Py_ssize_t dst, Py_ssize_t dsj,
                               const float *dhT, Py_ssize_t dhsb, Py_ssize_t dhsj,
                               const float *W_ih_T, const float *W_hh_T, const float *buf,
                               float *work, float *dx, Py_ssize_t dxsb, Py_ssize_t dxst, Py_ssize_t dxsi,
                               float *dh0, Py_ssize_t dh0sb,
                               float *dW_ih, float *dW_hh, float *db_ih, float *db_hh)
    double gru_train_tile_f32(int T, int I, int H, int O, int nb,
                              const float *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                              const float *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                              const float *y, Py_ssize_t ysb, Py_ssize_t yso,
                              const float *W_ih, const float *W_hh, const float *b_ih,
                              const float *b_hh, const float *W_ih_T, const float *W_hh_T,
                              const float *W_out, const float *W_out_T, const float *b_out,
                              float scale, float *ws, float *hT, Py_ssize_t hTsb,
                              float *dh0, Py_ssize_t dh0sb, float *dW_ih, float *dW_hh,
                              float *db_ih, float *db_hh, float *dW_out, float *db_out)
    Py_ssize_t lstm_tilebuf_f32(int T, int I, int H)
    Py_ssize_t lstm_work_f32(int I, int H, int O)
    void lstm_forward_tile_f32(int T, int I, int H, int nb,
                               const float *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                               const float *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                               const float *c0, Py_ssize_t c0sb, Py_ssize_t c0sj,
                               const float *W_cat, const float *bias, float *buf,
                               float *out, Py_ssize_t osb, Py_ssize_t ost,
                               float *hT, Py_ssize_t hTsb, float *cT, Py_ssize_t cTsb)
    void lstm_backward_tile_f32(int T, int I, int H, int nb,
                                const float *dout, Py_ssize_t dsb, Py_ssize_t dst, Py_ssize_t dsj,
                                const float *dhT, Py_ssize_t dhsb, Py_ssize_t dhsj,
                                const float *dcT, Py_ssize_t dcsb, Py_ssize_t dcsj,
                                const float *W_cat_T, const float *buf, float *work,
                                float *dx, Py_ssize_t dxsb, Py_ssize_t dxst, Py_ssize_t dxsi,
                                float *dh0, Py_ssize_t dh0sb, float *dc0, Py_ssize_t dc0sb,
                                float *dW_cat, float *db)
    double lstm_train_tile_f32(int T, int I, int H, int O, int nb,
                               const float *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                               const float *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                               const float *c0, Py_ssize_t c0sb, Py_ssize_t c0sj,
                               const float *y, Py_ssize_t ysb, Py_ssize_t yso,
                               const float *W_cat, const float *bias, const float *W_cat_T,
                               const float *W_out, const float *W_out_T, const float *b_out,
                               float scale, float *ws, float *hT, Py_ssize_t hTsb,
                               float *cT, Py_ssize_t cTsb, float *dh0, Py_ssize_t dh0sb,
                               float *dc0, Py_ssize_t dc0sb, float *dW_cat, float *db,
                               float *dW_out, float *db_out)

    Py_ssize_t gru_tilebuf_f64(int T, int I, int H)
    Py_ssize_t gru_work_f64(int I, int H, int O)
    void gru_forward_tile_f64(int T, int I, int H, int nb,
                              const double *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                              const double *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                              const double *W_ih, const double *W_hh, const double *b_ih,
                              const double *b_hh, double *buf,
                              double *out, Py_ssize_t osb, Py_ssize_t ost, double *hT, Py_ssize_t hTsb)
    void gru_backward_tile_f64(int T, int I, int H, int nb,
                               const double *dout, Py_ssize_t dsb, Py_ssize_t dst, Py_ssize_t dsj,
                               const double *dhT, Py_ssize_t dhsb, Py_ssize_t dhsj,
                               const double *W_ih_T, const double *W_hh_T, const double *buf,
                               double *work, double *dx, Py_ssize_t dxsb, Py_ssize_t dxst, Py_ssize_t dxsi,
                               double *dh0, Py_ssize_t dh0sb,
                               double *dW_ih, double *dW_hh, double *db_ih, double *db_hh)
    double gru_train_tile_f64(int T, int I, int H, int O, int nb,
                              const double *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                              const double *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                              const double *y, Py_ssize_t ysb, Py_ssize_t yso,
                              const double *W_ih, const double *W_hh, const double *b_ih,
                              const double *b_hh, const double *W_ih_T, const double *W_hh_T,
                              const double *W_out, const double *W_out_T, const double *b_out,
                              double scale, double *ws, double *hT, Py_ssize_t hTsb,
                              double *dh0, Py_ssize_t dh0sb, double *dW_ih, double *dW_hh,
                              double *db_ih, double *db_hh, double *dW_out, double *db_out)
    Py_ssize_t lstm_tilebuf_f64(int T, int I, int H)
    Py_ssize_t lstm_work_f64(int I, int H, int O)
    void lstm_forward_tile_f64(int T, int I, int H, int nb,
                               const double *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                               const double *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                               const double *c0, Py_ssize_t c0sb, Py_ssize_t c0sj,
                               const double *W_cat, const double *bias, double *buf,
                               double *out, Py_ssize_t osb, Py_ssize_t ost,
                               double *hT, Py_ssize_t hTsb, double *cT, Py_ssize_t cTsb)
    void lstm_backward_tile_f64(int T, int I, int H, int nb,
                                const double *dout, Py_ssize_t dsb, Py_ssize_t dst, Py_ssize_t dsj,
                                const double *dhT, Py_ssize_t dhsb, Py_ssize_t dhsj,
                                const double *dcT, Py_ssize_t dcsb, Py_ssize_t dcsj,
                                const double *W_cat_T, const double *buf, double *work,
                                double *dx, Py_ssize_t dxsb, Py_ssize_t dxst, Py_ssize_t dxsi,
                                double *dh0, Py_ssize_t dh0sb, double *dc0, Py_ssize_t dc0sb,
                                double *dW_cat, double *db)
    double lstm_train_tile_f64(int T, int I, int H, int O, int nb,
                               const double *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                               const double *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                               const double *c0, Py_ssize_t c0sb, Py_ssize_t c0sj,
                               const double *y, Py_ssize_t ysb, Py_ssize_t yso,
                               const double *W_cat, const double *bias, const double *W_cat_T,
                               const double *W_out, const double *W_out_T, const double *b_out,
                               double scale, double *ws, double *hT, Py_ssize_t hTsb,
                               double *cT, Py_ssize_t cTsb, double *dh0, Py_ssize_t dh0sb,
                               double *dc0, Py_ssize_t dc0sb, double *dW_cat, double *db,
                               double *dW_out, double *db_out)

    Py_ssize_t infer_ws_f32(int kind, int I, int H, int O)
    void infer_tile_f32(int kind, int T, int I, int H, int O, int nb,
                        const float *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                        const float *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                        const float *c0, Py_ssize_t c0sb, Py_ssize_t c0sj,
                        const float *W_a, const float *W_b, const float *b_a, const float *b_b,
                        const float *W_out, const float *b_out, float *ws,
                        float *yhat, Py_ssize_t ysb, float *hT, Py_ssize_t hTsb, float *cT, Py_ssize_t cTsb)

    Py_ssize_t infer_ws_f64(int kind, int I, int H, int O)
    void infer_tile_f64(int kind, int T, int I, int H, int O, int nb,
                        const double *x, Py_ssize_t xsb, Py_ssize_t xst, Py_ssize_t xsi,
                        const double *h0, Py_ssize_t h0sb, Py_ssize_t h0sj,
                        const double *c0, Py_ssize_t c0sb, Py_ssize_t c0sj,
                        const double *W_a, const double *W_b, const double *b_a, const double *b_b,
                        const double *W_out, const double *b_out, double *ws,
                        double *yhat, Py_ssize_t ysb, double *hT, Py_ssize_t hTsb, double *cT, Py_ssize_t cTsb)
