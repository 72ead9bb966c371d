// etcd3_watch_lease.js: the npm `etcd3` client (a second, independent gRPC stack: grpc-js)
// against one member. Endpoints come from CLUSTER_ENDPOINTS (set by cluster.sh run).
//
//  - 1,000 watchers on one connection: 990 on single keys (w/k00..w/k98, 10 per key) and 10 on
//    the prefix w/. 2,000 puts (20 rounds over 100 keys; w/k99 is watched only by the prefix
//    watchers) are then made. Every watcher must see exactly the events for its keys, each
//    once, in revision order, with the revision and value of the put that made it.
//  - 1,000 leases (TTL 15 s) kept alive by the client, each with a key attached, for at least
//    2 TTLs (granted first, so the keep-alives run through the whole watch phase). No lease
//    may be lost or fail a keep-alive; at the end every lease has time to live left and every
//    attached key still exists.
// Bounded: every wait has a deadline; the whole run is capped by TOTAL_MS.
'use strict';

const { Etcd3 } = require('etcd3');

const WATCHERS = 1000;
const PREFIX_WATCHERS = 10;
const KEYS = 100;
const ROUNDS = 20;
const LEASES = 1000;
const LEASE_TTL_S = 15;
const KEEPALIVE_MIN_MS = 2 * LEASE_TTL_S * 1000;
const TOTAL_MS = 150 * 1000;

const t0 = Date.now();
const elapsed = () => ((Date.now() - t0) / 1000).toFixed(1) + 's';
const log = (...a) => console.log(`[${elapsed()}]`, ...a);
const failures = [];
const fail = msg => {
    if (failures.length < 50) failures.push(msg);
    else if (failures.length === 50) failures.push('(more failures not shown)');
};
const sleep = ms => new Promise(r => setTimeout(r, ms));
const keyName = j => `w/k${String(j).padStart(2, '0')}`;

// Runs fn over items with at most `limit` promises in flight (bounded client-side queue).
async function pool(items, limit, fn) {
    let next = 0;
    const workers = [];
    for (let w = 0; w < Math.min(limit, items.length); w++) {
        workers.push((async () => {
            while (next < items.length) {
                const i = next++;
                await fn(items[i], i);
            }
        })());
    }
    await Promise.all(workers);
}

async function waitFor(what, cond, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
        if (Date.now() > deadline) return false;
        await sleep(50);
    }
    return true;
}

async function main() {
    const hosts = (process.env.CLUSTER_ENDPOINTS || '').split(',').filter(Boolean);
    if (hosts.length === 0) throw new Error('CLUSTER_ENDPOINTS is not set (run under cluster.sh run)');
    const client = new Etcd3({ hosts: hosts.map(h => `http://${h}`) });
    const hardStop = setTimeout(() => {
        console.error(`etcd3: still running after ${TOTAL_MS / 1000}s: giving up`);
        process.exit(1);
    }, TOTAL_MS);

    // --- leases ---------------------------------------------------------------------------
    const leases = [];
    let lost = 0, kaFailed = 0, kaSucceeded = 0;
    await pool([...Array(LEASES).keys()], 100, async i => {
        const lease = client.lease(LEASE_TTL_S);
        lease.on('lost', err => { lost++; fail(`lease ${i} lost: ${err}`); });
        lease.on('keepaliveFailed', err => { kaFailed++; fail(`lease ${i} keep-alive failed: ${err}`); });
        lease.on('keepaliveSucceeded', () => kaSucceeded++);
        await lease.put(`l/${i}`).value(`v${i}`);
        leases.push({ i, lease, id: await lease.grant() });
    });
    const leasesAt = Date.now();
    log(`${leases.length} leases granted (TTL ${LEASE_TTL_S}s), each with a key, kept alive`);

    // --- watchers -------------------------------------------------------------------------
    const watchers = [];
    const specs = [];
    for (let i = 0; i < WATCHERS - PREFIX_WATCHERS; i++) specs.push({ key: keyName(i % (KEYS - 1)) });
    for (let i = 0; i < PREFIX_WATCHERS; i++) specs.push({ prefix: 'w/' });
    await pool(specs, 50, async (spec, i) => {
        const b = spec.prefix ? client.watch().prefix(spec.prefix) : client.watch().key(spec.key);
        const w = await b.create();
        const rec = { spec, events: [], errors: 0 };
        w.on('put', kv => rec.events.push({ key: kv.key.toString(), value: kv.value.toString(),
                                            rev: Number(kv.mod_revision) }));
        w.on('delete', kv => rec.events.push({ key: kv.key.toString(), del: true }));
        w.on('error', err => { rec.errors++; fail(`watcher ${i}: error ${err}`); });
        rec.watcher = w;
        watchers[i] = rec;
    });
    log(`${watchers.length} watchers created`);

    // --- writes ---------------------------------------------------------------------------
    // Round r writes value r to every key; a round completes before the next starts, so the
    // expected order per key is 0..ROUNDS-1. The put's header revision is the event's.
    const putRev = new Map(); // "key=value" -> revision
    const allRevs = [];
    for (let r = 0; r < ROUNDS; r++) {
        await pool([...Array(KEYS).keys()], KEYS, async j => {
            const res = await client.put(keyName(j)).value(String(r)).exec();
            const rev = Number(res.header.revision);
            putRev.set(`${keyName(j)}=${r}`, rev);
            allRevs.push(rev);
        });
    }
    allRevs.sort((a, b) => a - b);
    log(`${KEYS * ROUNDS} puts acknowledged (revisions ${allRevs[0]}..${allRevs[allRevs.length - 1]})`);

    // --- check every watcher --------------------------------------------------------------
    const expected = rec => (rec.spec.prefix ? KEYS * ROUNDS : ROUNDS);
    const complete = await waitFor('events', () => watchers.every(r => r.events.length >= expected(r)), 30000);
    if (!complete) fail('not every watcher received all its events within 30s');
    await sleep(500); // anything extra (a duplicate) arrives now and is caught below
    let delivered = 0;
    for (const [i, rec] of watchers.entries()) {
        const ev = rec.events;
        delivered += ev.length;
        if (ev.length !== expected(rec)) {
            fail(`watcher ${i} (${rec.spec.key || rec.spec.prefix + '*'}): ${ev.length} events, expected ${expected(rec)}`);
        }
        let last = 0;
        for (const [n, e] of ev.entries()) {
            if (e.del) { fail(`watcher ${i}: unexpected delete of ${e.key}`); continue; }
            if (e.rev <= last) fail(`watcher ${i}: event ${n} revision ${e.rev} after ${last} (order/duplicate)`);
            last = e.rev;
            const want = putRev.get(`${e.key}=${e.value}`);
            if (want !== e.rev) fail(`watcher ${i}: event ${e.key}=${e.value} at revision ${e.rev}, put said ${want}`);
            if (!rec.spec.prefix) {
                if (e.key !== rec.spec.key) fail(`watcher ${i}: event for ${e.key}, watching ${rec.spec.key}`);
                if (e.value !== String(n)) fail(`watcher ${i}: event ${n} has value ${e.value}`);
            }
        }
        if (rec.spec.prefix && ev.length === KEYS * ROUNDS) {
            const revs = ev.map(e => e.rev);
            if (revs.some((r, n) => r !== allRevs[n])) fail(`prefix watcher ${i}: revisions differ from the puts'`);
        }
    }
    log(`${delivered} events delivered to ${watchers.length} watchers, checked`);

    // --- leases: keep them alive for at least 2 TTLs, then check --------------------------
    const wait = KEEPALIVE_MIN_MS - (Date.now() - leasesAt);
    if (wait > 0) {
        log(`keeping leases alive ${Math.ceil(wait / 1000)}s more (to ${KEEPALIVE_MIN_MS / 1000}s)`);
        await sleep(wait);
    }
    let alive = 0, minTtl = Infinity;
    await pool(leases, 50, async ({ i, id }) => {
        const res = await client.leaseClient.leaseTimeToLive({ ID: id, keys: true });
        const ttl = Number(res.TTL);
        minTtl = Math.min(minTtl, ttl);
        if (ttl > 0 && res.keys.length === 1 && res.keys[0].toString() === `l/${i}`) alive++;
        else fail(`lease ${i} (${id}): TTL ${ttl}, keys [${res.keys.map(k => k.toString())}]`);
    });
    const keys = await client.getAll().prefix('l/').count();
    if (keys !== LEASES) fail(`${keys} lease-attached keys remain, expected ${LEASES}`);
    log(`after ${((Date.now() - leasesAt) / 1000).toFixed(1)}s: ${alive}/${LEASES} leases alive ` +
        `(min remaining TTL ${minTtl}s), ${keys} attached keys, ${kaSucceeded} keep-alives answered, ` +
        `${kaFailed} failed, ${lost} lost`);
    if (lost !== 0) fail(`${lost} leases lost`);
    if (kaFailed !== 0) fail(`${kaFailed} keep-alives failed`);

    // --- teardown: revoke (the keys go with the leases), cancel the watchers ----------------
    await pool(leases, 50, async ({ lease }) => lease.revoke());
    const left = await client.getAll().prefix('l/').count();
    if (left !== 0) fail(`${left} keys remain after revoking every lease`);
    await pool(watchers, 50, async rec => rec.watcher.cancel());
    client.close();
    clearTimeout(hardStop);
}

main().then(() => {
    if (failures.length) {
        console.log('FAILURES:');
        for (const f of failures) console.log('  ' + f);
        console.log(`etcd3: FAILED (${failures.length} problems) in ${elapsed()}`);
        process.exit(1);
    }
    console.log(`etcd3: ${WATCHERS} watchers and ${LEASES} kept-alive leases OK in ${elapsed()}`);
    process.exit(0);
}, err => {
    console.log('FAILURES:');
    for (const f of failures) console.log('  ' + f);
    console.log(`etcd3: error: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
});
