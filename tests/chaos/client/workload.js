'use strict';
// The chaos workload clients: concurrent etcd v3 gRPC clients (npm etcd3 on @grpc/grpc-js,
// its low-level KV/Lease/Watch RPCs only, with every retry policy switched off so one call is
// one request) that record each operation as one JSON line: invocation and completion time
// (ns, one monotonic clock), outcome ok / fail (definitely no effect) / info (indeterminate).
// tests/chaos/check reads these lines; the format is documented in check/check.h.
//
// Usage: node workload.js --endpoints h:p,h:p --duration S --workload reg,append,watch,lock
//          --out FILE --seed N [--serializable-reads] [--healed FILE] [--clients N]
// After --duration it stops issuing operations, waits (bounded) for the file named by --healed
// to appear (the nemesis has healed everything), then runs the final reads that let the
// checkers see lost writes and lagging watchers, and exits. Every loop has a bound.

const path = require('path');
const fs = require('fs');
const modroot = process.env.CHAOS_NODE_MODULES || path.join(process.env.HOME || '/root', '.cache/baton/npm/node_modules');
const { Etcd3 } = require(path.join(modroot, 'etcd3'));
const cockatiel = require(path.join(modroot, 'cockatiel'));

const args = { workload: 'reg', duration: 30, clients: 0, seed: 1, serializable: false, healed: '' };
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i], v = process.argv[i + 1];
  if (a === '--endpoints') { args.endpoints = v.split(','); i++; }
  else if (a === '--duration') { args.duration = Number(v); i++; }
  else if (a === '--workload') { args.workload = v; i++; }
  else if (a === '--out') { args.out = v; i++; }
  else if (a === '--seed') { args.seed = Number(v); i++; }
  else if (a === '--clients') { args.clients = Number(v); i++; }
  else if (a === '--healed') { args.healed = v; i++; }
  else if (a === '--serializable-reads') { args.serializable = true; }
  else { console.error(`workload: unknown argument ${a}`); process.exit(2); }
}
if (!args.endpoints || !args.out || !(args.duration > 0)) {
  console.error('workload: --endpoints, --out and --duration are required');
  process.exit(2);
}

const CALL_TIMEOUT_MS = 2000;
const T_START = process.hrtime.bigint();
const now = () => Number(process.hrtime.bigint() - T_START);
const sleep = ms => new Promise(r => setTimeout(r, ms));
const out = fs.createWriteStream(args.out);
const record = o => out.write(JSON.stringify(o) + '\n');

// A small seeded PRNG (mulberry32) so a seed picks the same operation mix.
let rs = (args.seed >>> 0) || 1;
const rand = () => {
  rs = (rs + 0x6D2B79F5) >>> 0;
  let t = rs;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const pick = n => Math.floor(rand() * n);

function client(endpoints) {
  return new Etcd3({
    hosts: endpoints.map(e => `http://${e}`),
    dialTimeout: CALL_TIMEOUT_MS,
    defaultCallOptions: ctx => (ctx.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS }),
    faultHandling: { global: cockatiel.noop, host: () => cockatiel.noop },
  });
}

// What an error says about an effect: 'fail' only when the request certainly never reached the
// server (the connection was refused or never established) or the server refused it before
// proposing (too many requests); everything else, a deadline above all, is 'info'.
function classify(err) {
  const m = String((err && err.message) || err);
  if (/DEADLINE_EXCEEDED|CANCELLED/.test(m)) return 'info';
  if (/UNAVAILABLE/.test(m) && /ECONNREFUSED|No connection established/.test(m)) return 'fail';
  if (/etcdserver: too many requests/.test(m)) return 'fail';
  return 'info';
}

let stopping = false;
const deadline = Date.now() + args.duration * 1000;
const counters = { ok: 0, fail: 0, info: 0 };
const count = r => { counters[r]++; };
let uniq = 0;
const fresh = () => ++uniq + args.seed % 1000 * 1e9;

// A worker pinned to one member; the first `nodes` workers stay there (so a member cut off
// from the leader keeps serving them), the others move to the next member after errors.
class Worker {
  constructor(id, pinned) {
    this.id = id;
    this.pinned = pinned;
    this.ep = id % args.endpoints.length;
    this.errors = 0;
    this.c = client([args.endpoints[this.ep]]);
  }
  failed() {
    if (this.pinned || ++this.errors < 2) return;
    this.errors = 0;
    this.ep = (this.ep + 1) % args.endpoints.length;
    this.c.close();
    this.c = client([args.endpoints[this.ep]]);
  }
  succeeded() { this.errors = 0; }
}

// Keys rotate: after KEY_OPS operations a key retires and a fresh one takes its slot, which
// keeps each key's history small enough for the exact linearizability search.
class KeySlots {
  constructor(prefix, slots, opsPerKey) {
    this.prefix = prefix; this.ops = new Array(slots).fill(0); this.gen = new Array(slots).fill(0);
    this.opsPerKey = opsPerKey; this.used = new Set();
  }
  take() {
    const s = pick(this.ops.length);
    if (++this.ops[s] > this.opsPerKey) { this.ops[s] = 1; this.gen[s]++; }
    const k = `${this.prefix}${s}.${this.gen[s]}`;
    this.used.add(k);
    return k;
  }
}

const enc = s => Buffer.from(String(s));
const EQUAL = 0, T_CREATE = 1, T_MOD = 2, T_VALUE = 3;

// --- registers: linearizable (or serializable) read, write, CAS on value -------------------
const regKeys = new KeySlots('r/', 4, 150);
const lastWritten = new Map();

async function regOp(w) {
  const k = regKeys.take();
  const roll = rand(), t0 = now(), p = w.id;
  const rec = { w: 'reg', p, k, t0 };
  try {
    if (roll < 0.45) {
      rec.f = 'read';
      const res = await w.c.kv.range({ key: enc(k), serializable: args.serializable });
      rec.v = res.kvs.length ? Number(res.kvs[0].value.toString()) : 0;
    } else if (roll < 0.8) {
      rec.f = 'write'; rec.a = fresh();
      lastWritten.set(k, rec.a);
      await w.c.kv.put({ key: enc(k), value: enc(rec.a) });
    } else {
      rec.f = 'cas'; rec.a = lastWritten.get(k) || 0; rec.b = fresh();
      const cmp = rec.a === 0
        ? { key: enc(k), target: T_CREATE, result: EQUAL, create_revision: 0 }
        : { key: enc(k), target: T_VALUE, result: EQUAL, value: enc(rec.a) };
      const res = await w.c.kv.txn({ compare: [cmp], success: [{ request_put: { key: enc(k), value: enc(rec.b) } }], failure: [] });
      rec.v = res.succeeded ? 1 : 0;
      if (res.succeeded) lastWritten.set(k, rec.b);
    }
    rec.r = 'ok'; w.succeeded();
  } catch (e) {
    rec.r = rec.f === 'read' ? 'fail' : classify(e); rec.err = String(e.message).slice(0, 120); w.failed();
  }
  rec.t1 = now(); count(rec.r); record(rec);
}

// --- list-append: read-modify-write through a Txn guarded by mod_revision -------------------
const appendKeys = new KeySlots('a/', 3, 120);
const parseList = kv => (kv && kv.value.length ? kv.value.toString().split(',').map(Number) : []);

async function appendOp(w) {
  const k = appendKeys.take();
  const t0 = now(), p = w.id;
  const rec = { w: 'append', p, k, t0 };
  try {
    if (rand() < 0.4) {
      rec.f = 'read';
      const res = await w.c.kv.range({ key: enc(k), serializable: args.serializable });
      rec.l = parseList(res.kvs[0]);
      rec.r = 'ok';
    } else {
      rec.f = 'append'; rec.a = fresh(); rec.r = 'fail';
      for (let attempt = 0; attempt < 5 && rec.r === 'fail'; attempt++) {
        const cur = await w.c.kv.range({ key: enc(k) });
        const kv = cur.kvs[0], mod = kv ? kv.mod_revision : 0;
        const list = parseList(kv).concat([rec.a]);
        let res;
        try {
          res = await w.c.kv.txn({
            compare: [{ key: enc(k), target: T_MOD, result: EQUAL, mod_revision: mod }],
            success: [{ request_put: { key: enc(k), value: enc(list.join(',')) } }], failure: [],
          });
        } catch (e) { rec.r = classify(e); rec.err = String(e.message).slice(0, 120); break; }
        if (res.succeeded) rec.r = 'ok';
      }
    }
    if (rec.r !== 'info') w.succeeded(); else w.failed();
  } catch (e) {
    // Only the guard read failed: the element was never proposed.
    if (!rec.r || rec.f === 'read') rec.r = 'fail';
    rec.err = String(e.message).slice(0, 120); w.failed();
  }
  rec.t1 = now(); count(rec.r); record(rec);
}

// --- watch: writers put on w/, watchers stream w/ from one start revision ------------------
const WATCH_PREFIX = 'w/', WATCH_END = 'w0';
let watchStart = 0;
const watchers = [];

async function watchWrite(w) {
  const k = `${WATCH_PREFIX}${pick(8)}`, a = fresh(), t0 = now();
  const rec = { w: 'watch', f: 'write', p: w.id, k, a, t0 };
  try {
    const res = await w.c.kv.put({ key: enc(k), value: enc(a) });
    rec.rev = Number(res.header.revision); rec.r = 'ok'; w.succeeded();
  } catch (e) { rec.r = classify(e); rec.err = String(e.message).slice(0, 120); w.failed(); }
  rec.t1 = now(); count(rec.r); record(rec);
}

// A watcher on the raw Watch stream; after a break it resumes from the revision after the last
// event it delivered (our own bookkeeping, so a gap is the server's, not the library's).
class Watcher {
  constructor(id) { this.id = id; this.last = watchStart; this.ep = id; this.closed = false; this.stream = null; this.c = null; }
  async run() {
    record({ w: 'watch', f: 'start', p: this.id, r: 'ok', rev: watchStart + 1 });
    for (let attempt = 0; !this.closed && attempt < 100000; attempt++) {
      this.c = client([args.endpoints[this.ep % args.endpoints.length]]);
      try { await this.stream1(); } catch (e) { /* reconnect below */ }
      try { this.c.close(); } catch (e) { /* already closed */ }
      if (this.closed) break;
      this.ep++;
      await sleep(200);
    }
  }
  stream1() {
    return new Promise((resolve, reject) => {
      this.c.watchClient.watch().then(stream => {
        this.stream = stream;
        stream.on('data', res => {
          for (const ev of res.events || []) {
            const rev = Number(ev.kv.mod_revision);
            record({ w: 'watch', f: 'event', p: this.id, r: 'ok', k: ev.kv.key.toString(), rev,
                     a: ev.type === 'DELETE' || ev.type === 1 ? 0 : Number(ev.kv.value.toString()),
                     b: ev.type === 'DELETE' || ev.type === 1 ? 1 : 0 });
            if (rev > this.last) this.last = rev;
          }
          if (res.canceled) reject(new Error('watch canceled: ' + res.cancel_reason));
        });
        stream.on('error', reject);
        stream.on('end', resolve);
        stream.write({ create_request: { key: enc(WATCH_PREFIX), range_end: enc(WATCH_END), start_revision: this.last + 1 } });
        // A stuck stream (member cut off) is torn down now and then to try another member.
        this.timer = setTimeout(() => { try { stream.end(); stream.cancel && stream.cancel(); } catch (e) { /* gone */ } resolve(); }, 5000 + pick(5000));
      }, reject);
    }).finally(() => clearTimeout(this.timer));
  }
  stop() { this.closed = true; try { this.stream && this.stream.end(); this.c && this.c.close(); } catch (e) { /* gone */ } }
}

// --- lock with fencing tokens --------------------------------------------------------------
const LOCK_KEY = 'l/lock';
let holders = 0;

async function lockRound(w) {
  const holder = w.id * 100000 + ++holders;
  let lease;
  try {
    lease = (await w.c.leaseClient.leaseGrant({ TTL: 2 })).ID;
    const res = await w.c.kv.txn({
      compare: [{ key: enc(LOCK_KEY), target: T_CREATE, result: EQUAL, create_revision: 0 }],
      success: [{ request_put: { key: enc(LOCK_KEY), value: enc(holder), lease } }], failure: [],
    });
    if (!res.succeeded) { await sleep(50 + pick(100)); return; }
    const token = Number(res.header.revision);
    // Act under the token. The correct client makes the check part of the write (a Txn on
    // the lock's create_revision). With --serializable-reads it is the classic broken client:
    // it checks with a member-local read, then acts on the protected resource outside etcd
    // (the act is this record), and it acts until its check fails (lease expiry, bounded).
    const acts = args.serializable ? 300 : 3;
    for (let i = 0; i < acts && !stopping && Date.now() < deadline; i++) {
      const t0 = now(), rec = { w: 'lock', f: 'act', p: w.id, k: LOCK_KEY, a: token, b: holder, t0 };
      try {
        if (args.serializable) {
          const r = await w.c.kv.range({ key: enc(LOCK_KEY), serializable: true });
          if (!(r.kvs.length && Number(r.kvs[0].create_revision) === token)) break;
        } else {
          const r = await w.c.kv.txn({
            compare: [{ key: enc(LOCK_KEY), target: T_CREATE, result: EQUAL, create_revision: token }],
            success: [{ request_put: { key: enc('l/resource'), value: enc(token) } }], failure: [],
          });
          if (!r.succeeded) break;
        }
        rec.r = 'ok';
      } catch (e) { rec.r = 'info'; rec.err = String(e.message).slice(0, 120); }
      rec.t1 = now();
      if (rec.r === 'ok') { count('ok'); record(rec); } else { count('info'); break; }
      await sleep(30 + pick(60));
    }
    await w.c.kv.txn({
      compare: [{ key: enc(LOCK_KEY), target: T_CREATE, result: EQUAL, create_revision: token }],
      success: [{ request_delete_range: { key: enc(LOCK_KEY) } }], failure: [],
    });
  } catch (e) { w.failed(); await sleep(100); }
  finally { if (lease) w.c.leaseClient.leaseRevoke({ ID: lease }).catch(() => undefined); }
}

// --- driver --------------------------------------------------------------------------------
async function loop(w, fn) {
  for (let i = 0; i < 1e7 && Date.now() < deadline; i++) {
    await fn(w);
    await sleep(pick(20));
  }
}

async function waitHealed() {
  if (!args.healed) return;
  for (let i = 0; i < 1200 && !fs.existsSync(args.healed); i++) await sleep(100);
}

// After healing: one linearizable read of every key used, retried for a bounded time, so
// lost writes show up against a read that began after everything was acknowledged.
async function finalReads(w, keys, kind) {
  for (const k of keys) {
    for (let attempt = 0; attempt < 60; attempt++) {
      const t0 = now();
      try {
        const res = await w.c.kv.range({ key: enc(k) });
        const rec = { w: kind, f: 'read', p: w.id, k, t0, t1: now(), r: 'ok', final: true };
        if (kind === 'reg') rec.v = res.kvs.length ? Number(res.kvs[0].value.toString()) : 0;
        else rec.l = parseList(res.kvs[0]);
        count('ok'); record(rec);
        break;
      } catch (e) { w.failed(); await sleep(500); }
    }
  }
}

async function watchCatchUp(w) {
  let target = -1;
  for (let attempt = 0; attempt < 60 && target < 0; attempt++) {
    try {
      const res = await w.c.kv.range({ key: enc(WATCH_PREFIX), range_end: enc(WATCH_END) });
      target = res.kvs.reduce((m, kv) => Math.max(m, Number(kv.mod_revision)), 0);
    } catch (e) { w.failed(); await sleep(500); }
  }
  for (let i = 0; i < 300 && watchers.some(x => x.last < target); i++) await sleep(100);
  for (const x of watchers) {
    x.stop();
    record({ w: 'watch', f: 'end', p: x.id, r: 'ok', v: target >= 0 && x.last >= target ? 1 : 0, rev: x.last });
  }
}

async function main() {
  const kinds = args.workload.split(',');
  const n = args.clients || Math.max(4, 2 * args.endpoints.length);
  const tasks = [];
  let id = 0;
  const admin = new Worker(9999, false);
  if (kinds.includes('watch')) {
    for (let attempt = 0; attempt < 60; attempt++) {
      try { watchStart = Number((await admin.c.kv.range({ key: enc('w/') })).header.revision); break; }
      catch (e) { admin.failed(); await sleep(500); }
    }
    for (let i = 0; i < 3; i++) { const x = new Watcher(1000 + i); watchers.push(x); x.run(); }
  }
  for (const kind of kinds) {
    const fn = { reg: regOp, append: appendOp, watch: watchWrite, lock: lockRound }[kind];
    if (!fn) { console.error(`workload: unknown workload ${kind}`); process.exit(2); }
    const per = kind === 'lock' ? 3 : kind === 'watch' ? 2 : n;
    for (let i = 0; i < per; i++) {
      // Pinned workers keep using a member cut off from the others (that is where stale reads
      // come from); with --serializable-reads the lock holders are pinned too.
      const pinned = id < args.endpoints.length || (kind === 'reg' && i < args.endpoints.length) ||
        (kind === 'lock' && args.serializable);
      const w = new Worker(id, pinned);
      id++;
      tasks.push(loop(w, fn));
    }
  }
  await Promise.all(tasks);
  stopping = true;
  await waitHealed();
  if (kinds.includes('reg')) await finalReads(admin, [...regKeys.used], 'reg');
  if (kinds.includes('append')) await finalReads(admin, [...appendKeys.used], 'append');
  if (kinds.includes('watch')) await watchCatchUp(admin);
  await new Promise(r => out.end(r));
  console.log(`workload: ok=${counters.ok} fail=${counters.fail} info=${counters.info}`);
  process.exit(0);
}

const hardStop = setTimeout(() => { console.error('workload: hard time bound reached'); process.exit(3); },
  (args.duration + 240) * 1000);
hardStop.unref();
main().catch(e => { console.error('workload:', e); process.exit(1); });
