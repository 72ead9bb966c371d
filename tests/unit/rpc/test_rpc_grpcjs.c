/*
 * Interop: Node's @grpc/grpc-js, an independent gRPC implementation, calls the Echo service on
 * our server over TCP (grpcjs_client.js holds the checks). The npm packages are installed on
 * first use into a cache outside the repository ($BATON_NPM_CACHE or ~/.cache/baton/npm/grpc-js,
 * a directory of its own so installs for other tests never race with this one).
 */
#include "echo_service.h"
#include "net/net.h"
#include "test.h"

#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const char *npm_dir(void)
{
    static char dir[512];
    const char *env = getenv("BATON_NPM_CACHE");
    if (env && env[0])
        snprintf(dir, sizeof(dir), "%s", env);
    else
        snprintf(dir, sizeof(dir), "%s/.cache/baton/npm/grpc-js",
                 getenv("HOME") ? getenv("HOME") : "/tmp");
    return dir;
}

static int npm_ensure(void)
{
    char probe[600], cmd[1400];
    struct stat st;
    snprintf(probe, sizeof(probe), "%s/node_modules/@grpc/proto-loader/package.json", npm_dir());
    if (stat(probe, &st) == 0)
        return 0;
    snprintf(cmd, sizeof(cmd),
             "mkdir -p '%s' && npm install --prefix '%s' --no-audit --no-fund --silent "
             "@grpc/grpc-js@1 @grpc/proto-loader@0 >&2",
             npm_dir(), npm_dir());
    return system(cmd) == 0 ? 0 : -1;
}

struct child {
    pid_t pid;
    int status;
    bool done;
};

static bool child_done(void *ctx)
{
    struct child *c = ctx;
    if (!c->done && waitpid(c->pid, &c->status, WNOHANG) == c->pid)
        c->done = true;
    return c->done;
}

TEST(grpcjs_client_against_our_server)
{
    CHECK_OK(npm_ensure());
    struct net_loop *loop;
    struct rpc_server_config cfg;
    rpc_server_config_default(&cfg);
    struct rpc_server *srv;
    struct net_listener *ls;
    CHECK_OK(net_loop_create(NULL, &loop));
    CHECK_OK(rpc_server_create(&cfg, &srv));
    CHECK_OK(echo_register(srv));
    CHECK_OK(net_listen_rpc(loop, "http://127.0.0.1:0", srv, 0, &ls));

    char port[16], node_path[600];
    snprintf(port, sizeof(port), "%u", net_listener_port(ls));
    snprintf(node_path, sizeof(node_path), "%s/node_modules", npm_dir());
    setenv("NODE_PATH", node_path, 1);
    char *argv[] = {"node", RPC_TEST_DIR "/grpcjs_client.js", port, RPC_TEST_DIR "/echo.proto",
                    NULL};
    struct child c = {0};
    CHECK_EQ(posix_spawnp(&c.pid, "node", NULL, NULL, argv, environ), 0);
    int rc = net_loop_run_until(loop, child_done, &c, 60000);
    if (rc) {
        kill(c.pid, SIGKILL);
        waitpid(c.pid, &c.status, 0);
    }
    CHECK_OK(rc);
    CHECK(WIFEXITED(c.status));
    CHECK_EQ(WEXITSTATUS(c.status), 0);
    net_listener_close(ls);
    net_loop_destroy(loop);
    rpc_server_destroy(srv);
}
