/*
 * chaos_check: runs every checker on a history file and prints one summary line
 *   ops=N ok=N fail=N info=N anomalies=N unknown=N result=valid|invalid|unknown
 * preceded by one line per anomaly. With --out DIR, the ops of the smallest failing key go to
 * DIR/failing-key.jsonl. Exit status: 0 valid, 1 invalid, 2 bad input or usage, 3 unknown (a
 * search bound was reached and nothing else was found).
 */
#include "check.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void usage(void)
{
    fprintf(stderr, "usage: chaos_check [--steps N] [--out DIR] HISTORY.jsonl\n");
}

static int write_failing_key(const struct chaos_history *h, const struct chaos_report *rep,
                             const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/failing-key.jsonl", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "chaos_check: %s: %s\n", path, strerror(errno));
        return -errno;
    }
    for (size_t i = 0; i < h->n; i++) {
        if (strcmp(h->ops[i].key, rep->smallest_key) == 0)
            chaos_op_print(f, &h->ops[i]);
    }
    fclose(f);
    fprintf(stderr, "chaos_check: key %s (%zu ops) written to %s\n", rep->smallest_key,
            rep->smallest_key_ops, path);
    return 0;
}

int main(int argc, char **argv)
{
    /* Per key. Ten-minute runs with ~2,000 indeterminate writes had keys needing more than
     * 20 M steps (and under 1 G: about 15 s of CPU at worst). */
    uint64_t steps_max = 1000ull * 1000 * 1000;
    const char *out = NULL, *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
            char *end;
            steps_max = strtoull(argv[++i], &end, 10);
            if (*end || steps_max == 0) {
                usage();
                return 2;
            }
        } else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else if (argv[i][0] != '-' && !path) {
            path = argv[i];
        } else {
            usage();
            return 2;
        }
    }
    if (!path) {
        usage();
        return 2;
    }
    struct chaos_history h;
    chaos_history_init(&h);
    char err[512];
    int rc = chaos_history_load(&h, path, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "chaos_check: %s (%s)\n", err, baton_strerror(rc));
        chaos_history_free(&h);
        return 2;
    }
    struct chaos_report *rep = calloc(1, sizeof(*rep));
    if (!rep || (rc = chaos_check_all(&h, steps_max, rep)) != 0) {
        fprintf(stderr, "chaos_check: %s\n", baton_strerror(rc ? rc : BATON_ENOMEM));
        free(rep);
        chaos_history_free(&h);
        return 2;
    }
    for (size_t i = 0; i < rep->anomalies && i < CHAOS_ANOMALIES_MAX; i++)
        printf("anomaly kind=%s key=%s %s\n", rep->list[i].kind, rep->list[i].key,
               rep->list[i].what);
    if (rep->anomalies > CHAOS_ANOMALIES_MAX)
        printf("anomaly ... %zu more\n", rep->anomalies - CHAOS_ANOMALIES_MAX);
    if (rep->anomalies && out && rep->smallest_key[0])
        write_failing_key(&h, rep, out);
    const char *result = rep->anomalies ? "invalid" : rep->unknown ? "unknown" : "valid";
    printf("ops=%zu ok=%zu fail=%zu info=%zu anomalies=%zu unknown=%zu keys=%zu result=%s\n",
           rep->ops, rep->ok, rep->fail, rep->info, rep->anomalies, rep->unknown, rep->keys_checked,
           result);
    int status = rep->anomalies ? 1 : rep->unknown ? 3 : 0;
    free(rep);
    chaos_history_free(&h);
    return status;
}
