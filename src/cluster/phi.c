/*
 * Phi-accrual failure detection (Hayashibara et al., "The phi accrual failure detector", 2004),
 * as Akka and Cassandra use it: instead of a yes/no timeout, a suspicion level that grows with
 * the time since the last heartbeat, scaled by how regular the heartbeats have been. We model
 * the inter-arrival times as a normal distribution (Akka) over a sliding window, with a floor on
 * the standard deviation (very regular heartbeats would otherwise make a few milliseconds of
 * jitter look like a failure) and an acceptable pause added to the mean (a GC pause or a leader
 * change should not raise suspicion by itself). The normal CDF uses the logistic approximation
 * of Bowling et al. (2009), accurate to about 1.4e-4, as Akka does.
 */
#include "cluster/cluster.h"

#include <math.h>
#include <string.h>

static void window_add(struct cluster_phi *d, uint32_t interval_ms)
{
    uint16_t v = interval_ms > UINT16_MAX ? UINT16_MAX : (uint16_t)interval_ms;
    if (d->n == CLUSTER_PHI_WINDOW) {
        uint16_t old = d->intervals_ms[d->head];
        d->sum -= old;
        d->sumsq -= (double)old * old;
    } else {
        d->n++;
    }
    d->intervals_ms[d->head] = v;
    d->head = (d->head + 1) % CLUSTER_PHI_WINDOW;
    d->sum += v;
    d->sumsq += (double)v * v;
}

void cluster_phi_init(struct cluster_phi *d, const struct cluster_phi_config *cfg)
{
    memset(d, 0, sizeof(*d));
    /* Akka's first-heartbeat estimate: two samples one standard deviation (a quarter of the
     * interval) either side of the expected interval. */
    uint32_t mean = cfg->expected_interval_ms, std = mean / 4;
    window_add(d, mean - std);
    window_add(d, mean + std);
}

void cluster_phi_heartbeat(struct cluster_phi *d, uint64_t now_ms)
{
    if (d->last_ms && now_ms >= d->last_ms)
        window_add(d, (uint32_t)BATON_MIN(now_ms - d->last_ms, (uint64_t)UINT32_MAX));
    d->last_ms = now_ms;
}

double cluster_phi_mean_ms(const struct cluster_phi *d)
{
    return d->n ? d->sum / d->n : 0;
}

double cluster_phi_std_ms(const struct cluster_phi *d)
{
    if (d->n == 0)
        return 0;
    double mean = d->sum / d->n;
    double var = d->sumsq / d->n - mean * mean;
    return var > 0 ? sqrt(var) : 0; /* rounding may make a zero variance slightly negative */
}

double cluster_phi_value(const struct cluster_phi *d, const struct cluster_phi_config *cfg,
                         uint64_t now_ms)
{
    if (d->last_ms == 0 || now_ms <= d->last_ms)
        return 0;
    double elapsed = (double)(now_ms - d->last_ms);
    double mean = cluster_phi_mean_ms(d) + cfg->acceptable_pause_ms;
    double std = cluster_phi_std_ms(d);
    if (std < cfg->min_std_ms)
        std = cfg->min_std_ms;
    if (std < 1)
        std = 1;
    double y = (elapsed - mean) / std;
    double e = exp(-y * (1.5976 + 0.070566 * y * y));
    if (elapsed > mean) {
        /* P(later) = e / (1 + e); for a very late heartbeat e underflows: cap phi. */
        if (e < 1e-300)
            return 300;
        return -log10(e / (1.0 + e));
    }
    return -log10(1.0 - 1.0 / (1.0 + e));
}
