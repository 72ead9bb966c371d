/*
 * A consistent copy of the data file for Raft snapshots: LMDB copies from a read transaction of
 * its own, so it sees exactly the last committed batch. Called between batches, so the copy's
 * applied index is the store's applied index at the call.
 */
#include "internal.h"

int mvcc_copy_fd(struct mvcc_store *s, int fd)
{
    if (s->poisoned)
        return BATON_ECLOSED;
    if (s->wtxn || s->defrag_running)
        return BATON_EBUSY;
    return mdb_to_err(mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT));
}
