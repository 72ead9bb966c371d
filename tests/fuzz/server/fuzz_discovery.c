/* Fuzzes the discovery answer a joining member parses (it comes from the network): any input
 * parses or is refused, never read out of bounds, and what parses names members with ids. */
#include "server/server.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct server_discovery d;
    if (server_discovery_parse(data, size, &d) == 0) {
        BATON_ASSERT(d.cluster_id != 0);
        for (int i = 0; i < d.members_len; i++)
            BATON_ASSERT(d.members[i].id != 0 && strlen(d.members[i].peer_url) < 256);
    }
    return 0;
}
