// Interop client: @grpc/grpc-js (an independent gRPC implementation) against baton's rpc server
// running the Echo service. Usage: node grpcjs_client.js <port> <echo.proto>. Prints one line
// per check and exits non-zero if any failed.
'use strict';
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const [port, protoPath] = process.argv.slice(2);
const def = grpc.loadPackageDefinition(loader.loadSync(protoPath, {keepCase: true}));
const client = new def.baton.test.Echo(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
let failed = 0;

function check(name, cond, detail) {
  console.log(`${cond ? 'PASS' : 'FAIL'} ${name}${cond ? '' : ': ' + detail}`);
  if (!cond) failed++;
}

function unary(method, req, md, opts) {
  return new Promise((resolve) => {
    client[method](req, md || new grpc.Metadata(), opts || {}, (err, res) => resolve({err, res}));
  });
}

async function main() {
  const md = new grpc.Metadata();
  md.set('token', 'js-token');
  let r = await unary('Unary', {payload: Buffer.from('hello from js')}, md);
  check('unary', !r.err && r.res.payload.toString() === 'hello from js' && r.res.token === 'js-token',
        JSON.stringify(r));

  const text = 'etcdserver: mvcc: required revision has been compacted';
  r = await unary('Unary', {status: 11, message: text});
  check('error status and message', r.err && r.err.code === 11 && r.err.details === text,
        r.err && `${r.err.code} ${r.err.details}`);

  r = await unary('Unary', {status: 9, message: '100% done\nnext line \u2713'});
  check('percent-encoded message', r.err && r.err.code === 9 &&
        r.err.details === '100% done\nnext line \u2713', r.err && JSON.stringify(r.err.details));

  r = await unary('Unary', {count: 3000000});
  check('large response', !r.err && r.res.payload.length === 3000000, r.err && r.err.details);

  r = await unary('Unary', {payload: Buffer.alloc(1400 * 1024, 7)});
  check('large request', !r.err && r.res.payload.length === 1400 * 1024, r.err && r.err.details);

  r = await unary('Unary', {payload: Buffer.alloc(2 * 1024 * 1024, 1)});
  check('oversize request', r.err && r.err.code === 8 &&
        /^grpc: received message larger than max \(\d+ vs\. 1572864\)$/.test(r.err.details),
        r.err && `${r.err.code} ${r.err.details}`);

  await new Promise((resolve) => {
    const seqs = [];
    const call = client.Stream({payload: Buffer.from('s'), count: 500});
    call.on('data', (m) => seqs.push(m.seq || 0)); // proto3 omits 0
    call.on('error', (e) => { check('server streaming', false, e.details); resolve(); });
    call.on('status', (s) => {
      if (s.code !== 0) return;
      check('server streaming', seqs.length === 500 && seqs.every((v, i) => v === i),
            `${seqs.length} messages`);
      resolve();
    });
  });

  await new Promise((resolve) => {
    const got = [];
    const call = client.Bidi();
    call.on('data', (m) => got.push(m.payload.toString()));
    call.on('error', (e) => { check('bidi', false, e.details); resolve(); });
    call.on('status', (s) => {
      if (s.code !== 0) return;
      check('bidi', got.length === 20 && got[19] === 'm19' && s.details === 'bye',
            `${got.length} ${s.details}`);
      resolve();
    });
    for (let i = 0; i < 20; i++) call.write({payload: Buffer.from(`m${i}`)});
    call.end();
  });

  r = await new Promise((resolve) => {
    client.makeUnaryRequest('/baton.test.Echo/Nope', (x) => x, (x) => x, Buffer.alloc(0),
                            (err, res) => resolve({err, res}));
  });
  check('unknown method', r.err && r.err.code === 12 &&
        r.err.details === 'unknown method Nope for service baton.test.Echo',
        r.err && `${r.err.code} ${r.err.details}`);

  r = await new Promise((resolve) => {
    client.makeUnaryRequest('/baton.test.Nope/X', (x) => x, (x) => x, Buffer.alloc(0),
                            (err, res) => resolve({err, res}));
  });
  check('unknown service', r.err && r.err.code === 12 &&
        r.err.details === 'unknown service baton.test.Nope', r.err && r.err.details);

  r = await unary('Hold', {}, null, {deadline: Date.now() + 300});
  check('deadline', r.err && r.err.code === 4, r.err && `${r.err.code} ${r.err.details}`);

  const many = [];
  for (let i = 0; i < 100; i++) many.push(unary('Unary', {payload: Buffer.from(`c${i}`)}));
  const all = await Promise.all(many);
  check('100 concurrent calls', all.every((x, i) => !x.err && x.res.payload.toString() === `c${i}`),
        'a call failed');

  client.close();
  process.exit(failed ? 1 : 0);
}

main().catch((e) => { console.log(`FAIL exception: ${e.stack}`); process.exit(2); });
