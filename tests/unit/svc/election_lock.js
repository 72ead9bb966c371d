// v3election, v3lock and Auth through @grpc/grpc-js against one endpoint; prints a transcript
// with lease ids and revisions replaced by names, so batond's and etcd's can be diffed.
// Usage: node election_lock.js <host:port> <proto dir>
'use strict';
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const [ep, dir] = process.argv.slice(2);
const def = loader.loadSync(['rpc.proto', 'v3election.proto', 'v3lock.proto'],
  {includeDirs: [dir], longs: String, defaults: true});
const pkg = grpc.loadPackageDefinition(def);
const cred = grpc.credentials.createInsecure();
const el = new pkg.v3electionpb.Election(ep, cred);
const lk = new pkg.v3lockpb.Lock(ep, cred);
const ls = new pkg.etcdserverpb.Lease(ep, cred);
const au = new pkg.etcdserverpb.Auth(ep, cred);
const kv = new pkg.etcdserverpb.KV(ep, cred);
const dl = () => ({deadline: Date.now() + 10000});
const call = (c, m, req) => new Promise((res) => c[m](req, dl(), (err, r) => res(err ? {err} : r)));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const names = new Map();
const nm = (id) => { if (!names.has(id)) names.set(id, 'L' + (names.size + 1)); return names.get(id); };
const hex = (id) => BigInt(id).toString(16);
const show = (what, r) => {
  if (r.err) { console.log(`${what}: error code=${r.err.code} ${r.err.details}`); return; }
  console.log(`${what}: ok`);
};
const keyName = (k) => { let s = Buffer.from(k).toString(); for (const [id, n] of names) s = s.replace(hex(id), n); return s; };
async function grant(ttl) { const r = await call(ls, 'LeaseGrant', {TTL: ttl, ID: 0}); nm(r.ID); return r.ID; }
async function leader(name) {
  const r = await call(el, 'Leader', {name: Buffer.from(name)});
  if (r.err) return show(`leader ${name}`, r);
  console.log(`leader ${name}: ${keyName(r.kv.key)}=${r.kv.value} lease=${nm(r.kv.lease)}`);
}
async function main() {
  const L1 = await grant(30), L2 = await grant(30), L3 = await grant(30);
  await leader('e');
  const c1 = await call(el, 'Campaign', {name: Buffer.from('e'), lease: L1, value: Buffer.from('v1')});
  const lk1 = c1.leader;
  console.log(`campaign1: key=${keyName(lk1.key)} name=${lk1.name} lease=${nm(lk1.lease)} rev=header:${lk1.rev === c1.header.revision}`);
  const seen = [];
  const obs = el.Observe({name: Buffer.from('e')});
  obs.on('data', (r) => seen.push(`${keyName(r.kv.key)}=${r.kv.value}`));
  obs.on('error', () => {});
  let c2done = false;
  const c2p = call(el, 'Campaign', {name: Buffer.from('e'), lease: L2, value: Buffer.from('v2')}).then((r) => { c2done = true; return r; });
  await sleep(700);
  console.log(`campaign2 waiting: ${!c2done}`);
  await leader('e');
  show('proclaim v1b', await call(el, 'Proclaim', {leader: lk1, value: Buffer.from('v1b')}));
  await sleep(300);
  await leader('e');
  show('proclaim bad rev', await call(el, 'Proclaim', {leader: {...lk1, rev: String(BigInt(lk1.rev) + 1000n)}, value: Buffer.from('x')}));
  show('proclaim no leader', await call(el, 'Proclaim', {value: Buffer.from('x')}));
  // A third contender gives up: its key goes with its call.
  const c3 = el.Campaign({name: Buffer.from('e'), lease: L3, value: Buffer.from('v3')}, (err) => {
    console.log(`campaign3 cancelled: ${err && err.code === grpc.status.CANCELLED}`);
  });
  await sleep(500);
  c3.cancel();
  await sleep(700);
  const keys = await call(kv, 'Range', {key: Buffer.from('e/'), rangeEnd: Buffer.from('e0')});
  console.log(`keys under e/: ${keys.kvs.map((k) => keyName(k.key)).sort().join(' ')}`);
  show('resign 1', await call(el, 'Resign', {leader: lk1}));
  const c2 = await c2p;
  console.log(`campaign2: key=${keyName(c2.leader.key)} later=${BigInt(c2.leader.rev) > BigInt(lk1.rev)}`);
  await sleep(300);
  await leader('e');
  show('resign 1 again', await call(el, 'Resign', {leader: lk1}));
  await call(ls, 'LeaseRevoke', {ID: L2});
  await sleep(300);
  await leader('e');
  obs.cancel();
  console.log(`observed: ${seen.join(' ')}`);

  // Auth on a cluster without auth.
  const st = await call(au, 'AuthStatus', {});
  if (st.err) show('auth status', st); else console.log(`auth status: enabled=${st.enabled}`);
  show('authenticate', await call(au, 'Authenticate', {name: 'root', password: 'x'}));
  const ul = await call(au, 'UserList', {});
  console.log(`user list: [${ul.users}]`);
  const rl = await call(au, 'RoleList', {});
  console.log(`role list: [${rl.roles}]`);
  show('user get', await call(au, 'UserGet', {name: 'nobody'}));
  show('role get', await call(au, 'RoleGet', {role: 'nobody'}));
  show('user delete', await call(au, 'UserDelete', {name: 'nobody'}));
  show('role delete', await call(au, 'RoleDelete', {role: 'nobody'}));
  show('auth enable', await call(au, 'AuthEnable', {}));
  show('auth disable', await call(au, 'AuthDisable', {}));

  // Locks: mutual exclusion; Unlock passes it on; a revoked holder passes it on.
  const L4 = await grant(30), L5 = await grant(30), L6 = await grant(30);
  const a = await call(lk, 'Lock', {name: Buffer.from('l'), lease: L4});
  console.log(`lock a: ${keyName(a.key)}`);
  let bdone = false, cdone = false;
  const bp = call(lk, 'Lock', {name: Buffer.from('l'), lease: L5}).then((r) => { bdone = true; return r; });
  const cp = call(lk, 'Lock', {name: Buffer.from('l'), lease: L6}).then((r) => { cdone = true; return r; });
  await sleep(700);
  console.log(`lock b, c waiting: ${!bdone} ${!cdone}`);
  show('unlock a', await call(lk, 'Unlock', {key: a.key}));
  // etcd 3.4.23's own Lock service stops here: b never gets the lock after the unlock (its
  // server-side session); the rest runs against batond only.
  if (process.argv[4] === 'ref') process.exit(0);
  const b = await bp;
  if (b.err) show("lock b", b);
  await sleep(300);
  console.log(`lock b: ${keyName(b.key)} c waiting: ${!cdone}`);
  await call(ls, 'LeaseRevoke', {ID: L5});
  const c = await cp;
  console.log(`lock c after b's lease revoked: ${keyName(c.key)}`);
  show('lock no lease', await call(lk, 'Lock', {name: Buffer.from('l'), lease: '7'}));
  show('unlock c', await call(lk, 'Unlock', {key: c.key}));

  process.exit(0);
}
setTimeout(() => { console.log('TIMEOUT'); process.exit(1); }, 40000);
main().catch((e) => { console.log('EXCEPTION ' + e.stack); process.exit(1); });
