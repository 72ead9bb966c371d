/* Registers every etcd service on the rpc server. */
#include "rpc/svc.h"

#include <stdlib.h>

int services_create(struct rpc_server *rs, struct server *s, const struct services_config *cfg,
                    struct services **out)
{
    struct services *sv = calloc(1, sizeof(*sv));
    if (!sv)
        return BATON_ENOMEM;
    sv->rs = rs;
    sv->s = s;
    sv->cfg = *cfg;
    if (!sv->cfg.max_txn_ops)
        sv->cfg.max_txn_ops = 128;
    int rc = svc_kv_register(sv);
    if (!rc)
        rc = svc_watch_register(sv);
    if (!rc)
        rc = svc_lease_register(sv);
    if (!rc)
        rc = svc_election_register(sv);
    if (!rc)
        rc = svc_lock_register(sv);
    if (!rc)
        rc = svc_auth_register(sv);
    if (!rc)
        rc = svc_cluster_register(sv);
    if (!rc)
        rc = svc_maint_register(sv);
    if (!rc)
        rc = svc_tso_register(sv);
    if (!rc)
        rc = svc_config_register(sv);
    if (rc) {
        svc_tso_destroy(sv);
        svc_config_destroy(sv);
        svc_maint_destroy(sv);
        free(sv);
        return rc;
    }
    *out = sv;
    return 0;
}

void services_tick(struct services *sv)
{
    svc_watch_tick(sv);
    svc_recipe_tick(sv);
    svc_maint_tick(sv);
    svc_tso_tick(sv);
    svc_config_tick(sv);
}

void services_destroy(struct services *sv)
{
    svc_watch_destroy(sv);
    svc_lease_destroy(sv);
    svc_recipe_destroy(sv);
    svc_maint_destroy(sv);
    svc_tso_destroy(sv);
    svc_config_destroy(sv);
    free(sv);
}
