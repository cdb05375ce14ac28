/* Losses with mean reduction (as PyTorch's defaults) and their gradients w.r.t. the prediction.
 * The gradient kernels include the 1/count of the mean, so they seed backward directly. */
#ifndef MT_LOSSES_H
#define MT_LOSSES_H
#include "../mt_common.h"

/* mean((p - t)^2) over n elements. */
static inline void mt_mse_loss(const float *p, const float *t, float *loss, int n)
{
    float s = 0.0f;
    int i;
    for (i = 0; i < n; ++i) s += (p[i] - t[i]) * (p[i] - t[i]);
    *loss = s / (float)n;
}

static inline void mt_mse_loss_grad(const float *p, const float *t, float *dp, int n)
{
    int i;
    for (i = 0; i < n; ++i) dp[i] = 2.0f * (p[i] - t[i]) / (float)n;
}

/* Logits (batch, classes), integer labels (batch): mean of -log softmax(logits)[label].
 * A label outside [0, classes) makes the loss NaN. */
static inline void mt_cross_entropy(const float *x, const int32_t *labels, float *loss, int batch,
                                    int classes)
{
    float s = 0.0f;
    int b, c;
    for (b = 0; b < batch; ++b) {
        const float *row = x + (size_t)b * classes;
        float mx = row[0], sum = 0.0f;
        if (labels[b] < 0 || labels[b] >= classes) {
            *loss = NAN;
            return;
        }
        for (c = 1; c < classes; ++c) mx = row[c] > mx ? row[c] : mx;
        for (c = 0; c < classes; ++c) sum += expf(row[c] - mx);
        s += logf(sum) - (row[labels[b]] - mx); /* the stable form of log-softmax, as softmax.h */
    }
    *loss = s / (float)batch;
}

/* d loss / d logits = (softmax(x) - onehot(label)) / batch. */
static inline void mt_cross_entropy_grad(const float *x, const int32_t *labels, float *dx, int batch,
                                         int classes)
{
    int b, c;
    for (b = 0; b < batch; ++b) {
        const float *row = x + (size_t)b * classes;
        float *drow = dx + (size_t)b * classes;
        float mx = row[0], sum = 0.0f;
        for (c = 1; c < classes; ++c) mx = row[c] > mx ? row[c] : mx;
        for (c = 0; c < classes; ++c) sum += expf(row[c] - mx);
        for (c = 0; c < classes; ++c)
            drow[c] = (expf(row[c] - mx) / sum - (c == labels[b] ? 1.0f : 0.0f)) / (float)batch;
    }
}

/* mean(max(x, 0) - x * t + log(1 + exp(-|x|))) over n elements: finite for any logit. */
static inline void mt_bce_with_logits(const float *x, const float *t, float *loss, int n)
{
    float s = 0.0f;
    int i;
    for (i = 0; i < n; ++i) s += (x[i] > 0.0f ? x[i] : 0.0f) - x[i] * t[i] + log1pf(expf(-fabsf(x[i])));
    *loss = s / (float)n;
}

static inline void mt_bce_with_logits_grad(const float *x, const float *t, float *dx, int n)
{
    int i;
    for (i = 0; i < n; ++i) {
        const float e = expf(-fabsf(x[i]));
        const float sig = x[i] >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        dx[i] = (sig - t[i]) / (float)n;
    }
}

#endif
