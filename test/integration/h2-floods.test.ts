/**
 * HTTP/2 floods against the HTTPS listener, sent as raw frames over real TLS (test/helpers/h2-frames.ts):
 * the attacks that took HTTP/2 servers down in 2023-2024 (rapid reset, CVE-2023-44487; the
 * CONTINUATION flood, CVE-2024-27983 and its kin; a PING flood). Each asserts what the origin
 * saw, that the attacking connection was closed, and that another client is served meanwhile.
 */
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LANE_FACTOR } from '../../src/admission/limiter.js';
import { startGateway, type StartedGateway } from '../helpers/gateway.js';
import { startTestOrigin, type TestOrigin } from '../helpers/test-origin.js';
import { makeTestCa, type TestCa } from '../helpers/tls-certs.js';
import { h2get } from '../helpers/tls-client.js';
import { until } from '../helpers/until.js';
import { ERROR, FLAG, FRAME, bombFields, field, frame, getBlock, rawH2 } from '../helpers/h2-frames.js';

async function metric(adminUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  return Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+(?:\\.\\d+)?)`, 'm').exec(text)?.[1] ?? NaN);
}

describe('HTTP/2 floods (attacker trial)', () => {
  let origin: TestOrigin;
  let gw: StartedGateway;
  let ca: TestCa;
  let port: number;

  beforeAll(async () => {
    origin = await startTestOrigin({ name: 'o' });
    // Cacheable, but each query its own entry: every stream a fill.
    origin.route('/r', { delayMs: 200, headers: { 'cache-control': 'max-age=60' }, body: 'report' });
    origin.route('/page', { headers: { 'cache-control': 'max-age=60' }, body: 'a page' });
    ca = await makeTestCa();
    gw = await startGateway({
      tls: { host: '127.0.0.1', port: 0 },
      sites: [{ name: 's', hosts: ['*'], origins: [{ url: origin.url }], healthCheck: { enabled: false }, tls: ca.write('s', await ca.leaf(['s.test'])) }],
    });
    port = gw.gw.httpsAddress!.port;
  });

  afterAll(async () => {
    await gw?.close();
    await origin?.close();
  });

  it('rapid reset (CVE-2023-44487): a connection that opens and resets streams by the thousand is closed with ENHANCE_YOUR_CALM after 500; the origin sees no more at once than the limit and its slow lane, another client is served', async () => {
    origin.reset();
    const refusedBefore = await metric(gw.adminUrl, 'crowdgate_client_connections_refused_total\\{reason="rapid_reset"\\}');
    const attacker = await rawH2(port, ca.ca, 's.test');
    const N = 5000;
    let sent = 0;
    for (let i = 0; i < N && !attacker.isClosed(); i += 100) {
      const batch: Buffer[] = [];
      for (let j = i; j < i + 100; j++) {
        const id = 2 * j + 1;
        batch.push(frame(FRAME.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, id, getBlock(`/r?i=${j}`, 's.test')));
        batch.push(frame(FRAME.RST_STREAM, 0, id, Buffer.from([0, 0, 0, ERROR.CANCEL])));
      }
      if (await attacker.send(...batch)) sent += 100;
      // (a turn for the server to read, as a real network gives it)
      await new Promise((r) => setImmediate(r));
    }
    await Promise.race([attacker.closed, new Promise((r) => setTimeout(r, 5000))]);
    expect(attacker.isClosed()).toBe(true);
    expect(attacker.goaways()).toContain(ERROR.ENHANCE_YOUR_CALM);
    expect(sent).toBeLessThan(N);
    // Another client, meanwhile.
    const other = await h2get(port, ca.ca, 's.test', '/page');
    expect(other.status).toBe(200);
    await until(async () => (await metric(gw.adminUrl, 'crowdgate_queue_length')) === 0, 'the queue empty');
    await until(() => origin.inflight === 0, 'the origin done');
    // The fills the resets started asked for permits as any request does: the limit's, and
    // (no round trip known yet, so those held past 75 ms are overdue) the slow lane's, 8 times it.
    const limit = await metric(gw.adminUrl, 'crowdgate_origin_limit');
    expect(origin.peakInflight).toBeLessThanOrEqual((LANE_FACTOR + 1) * limit);
    expect(origin.count('/r')).toBeLessThan(sent / 5);
    expect(await metric(gw.adminUrl, 'crowdgate_client_connections_refused_total\\{reason="rapid_reset"\\}')).toBe((Number.isNaN(refusedBefore) ? 0 : refusedBefore) + 1);
  });

  it('a browser\'s cancels are not a rapid reset: 300 streams all reset at once, then 600 with one in three reset, and the connection serves on', async () => {
    const client = http2.connect(`https://127.0.0.1:${port}`, { ca: ca.ca, servername: 's.test' });
    client.on('error', () => undefined);
    const ask = (path: string, cancel: boolean) =>
      new Promise<number>((resolve) => {
        const req = client.request({ ':authority': 's.test', ':path': path });
        req.on('response', (h) => {
          req.resume();
          req.on('end', () => resolve(Number(h[':status'])));
        });
        req.on('error', () => resolve(0));
        req.on('close', () => resolve(0));
        req.end();
        if (cancel) setImmediate(() => req.close(http2.constants.NGHTTP2_CANCEL));
      });
    try {
      // A page's requests, all cancelled as the visitor navigates away.
      await Promise.all(Array.from({ length: 300 }, (_, i) => ask(`/page?nav=${i}`, true)));
      // Search as you type: each keystroke's request cancels the last.
      for (let i = 0; i < 600; i += 30) await Promise.all(Array.from({ length: 30 }, (_, j) => ask(`/page?q=${i + j}`, (i + j) % 3 === 0)));
      expect(client.destroyed).toBe(false);
      expect(await ask('/page?after', false)).toBe(200);
    } finally {
      client.close();
    }
  });

  it('CONTINUATION flood (CVE-2024-27983 and kin): a header block that never ends is cut off within its size bound; the gateway keeps serving', async () => {
    const attacker = await rawH2(port, ca.ca, 's.test');
    // HEADERS without END_HEADERS, then CONTINUATION frames of 16 KB of fields each, up to 64 MB.
    const chunk = Buffer.concat(Array.from({ length: 16 }, (_, i) => field(`x-flood-${i}`, 'a'.repeat(1000))));
    await attacker.send(frame(FRAME.HEADERS, FLAG.END_STREAM, 1, getBlock('/page', 's.test')));
    let sent = 0;
    const started = Date.now();
    while (sent < 64 * 1024 * 1024 && !attacker.isClosed() && Date.now() - started < 10_000) {
      if (!(await attacker.send(...Array.from({ length: 16 }, () => frame(FRAME.CONTINUATION, 0, 1, chunk))))) break;
      sent += 16 * chunk.length;
    }
    await Promise.race([attacker.closed, new Promise((r) => setTimeout(r, 3000))]);
    expect(attacker.isClosed()).toBe(true);
    // Cut off long before 64 MB: the head's bound is limits.maxHeaderBytes (SETTINGS_MAX_HEADER_LIST_SIZE).
    expect(sent).toBeLessThan(4 * 1024 * 1024);
    expect((await h2get(port, ca.ca, 's.test', '/page')).status).toBe(200);
  });

  it('HPACK bomb: a header block of one 4 000-byte field referred to a thousand times (4 MB decoded from 5 KB) is refused before it is decoded into a request; the gateway keeps serving', async () => {
    const attacker = await rawH2(port, ca.ca, 's.test');
    const block = Buffer.concat([getBlock('/page', 's.test'), bombFields('x-bomb', 'a'.repeat(4000), 1000)]);
    expect(block.length).toBeLessThan(16_384); // one frame
    await attacker.send(frame(FRAME.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, 1, block));
    const answered = () => attacker.received.filter((f) => f.streamId === 1 && (f.type === FRAME.HEADERS || f.type === FRAME.RST_STREAM));
    await until(() => answered().length > 0 || attacker.isClosed(), 'the stream answered, reset or closed');
    // Reset at the field past twice the count a request may have (limits.maxHeadersCount,
    // 100, plus the pseudo-fields), as Node's HTTP/2 reads it: never decoded whole into a
    // request and answered 431, which let each such frame cost 8 MB and 7 ms (attacker trial).
    expect(answered().map((f) => f.type)).not.toContain(FRAME.HEADERS);
    expect((await h2get(port, ca.ca, 's.test', '/page')).status).toBe(200);
    attacker.socket.destroy();
  });

  it('a request with as many fields as limits.maxHeadersCount allows is still served over HTTP/2', async () => {
    const attacker = await rawH2(port, ca.ca, 's.test');
    const fields = Array.from({ length: 95 }, (_, i) => field(`x-f${i}`, 'v'));
    await attacker.send(frame(FRAME.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, 1, Buffer.concat([getBlock('/page', 's.test'), ...fields])));
    await until(() => attacker.received.some((f) => f.streamId === 1 && (f.type === FRAME.HEADERS || f.type === FRAME.RST_STREAM)) || attacker.isClosed(), 'the stream answered');
    const head = attacker.received.find((f) => f.streamId === 1 && f.type === FRAME.HEADERS);
    expect(head, 'an answer, not a reset').toBeDefined();
    expect(head!.payload[0]).toBe(0x88); // :status 200 (static entry 8)
    attacker.socket.destroy();
  });

  it('a browser\'s cookie crumbs (each cookie a field of its own, as Chrome and Firefox send them) count as one field, as over HTTP/1.1: 180 cookies are served, not 431 (review)', async () => {
    const attacker = await rawH2(port, ca.ca, 's.test');
    const crumbs = Array.from({ length: 180 }, (_, i) => field('cookie', `c${i}=v${i}`));
    await attacker.send(frame(FRAME.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, 1, Buffer.concat([getBlock('/page', 's.test'), field('user-agent', 'browser'), ...crumbs])));
    await until(() => attacker.received.some((f) => f.streamId === 1 && (f.type === FRAME.HEADERS || f.type === FRAME.RST_STREAM)) || attacker.isClosed(), 'the stream answered');
    const head = attacker.received.find((f) => f.streamId === 1 && f.type === FRAME.HEADERS);
    expect(head, 'an answer, not a reset').toBeDefined();
    expect(head!.payload[0]).toBe(0x88); // :status 200 (static entry 8), not 431
    attacker.socket.destroy();
  });

  /**
   * Sends `control` by the thousand (up to 200 000, 10 s) on a connection that reads nothing,
   * so the answers the server owes pile up on its side; then whether it closed and how many went.
   */
  async function floodUnread(control: Buffer): Promise<{ closed: boolean; sent: number }> {
    const attacker = await rawH2(port, ca.ca, 's.test');
    attacker.socket.pause();
    let sent = 0;
    const started = Date.now();
    while (sent < 200_000 && !attacker.isClosed() && Date.now() - started < 10_000) {
      if (!(await attacker.send(...Array.from({ length: 1000 }, () => control)))) break;
      sent += 1000;
    }
    await Promise.race([attacker.closed, new Promise((r) => setTimeout(r, 3000))]);
    return { closed: attacker.isClosed(), sent };
  }

  it('PING flood: a client that sends PINGs by the hundred thousand and reads no answer is closed; the gateway keeps serving', async () => {
    expect((await floodUnread(frame(FRAME.PING, 0, 0, Buffer.alloc(8, 7)))).closed).toBe(true);
    expect((await h2get(port, ca.ca, 's.test', '/page')).status).toBe(200);
  });

  it('SETTINGS flood (CVE-2019-9515): a client that sends SETTINGS by the hundred thousand and reads no ACK is closed; the gateway keeps serving', async () => {
    // One entry each (SETTINGS_INITIAL_WINDOW_SIZE = 65535: no change, but each must be ACKed).
    const entry = Buffer.alloc(6);
    entry.writeUInt16BE(0x4, 0);
    entry.writeUInt32BE(65_535, 2);
    const flood = await floodUnread(frame(FRAME.SETTINGS, 0, 0, entry));
    expect(flood).toMatchObject({ closed: true });
    expect(flood.sent).toBeLessThan(200_000);
    expect((await h2get(port, ca.ca, 's.test', '/page')).status).toBe(200);
  });
});

describe('HTTP/2 request bodies held in memory (limits.requestBuffering.memoryBytes)', () => {
  it('many streams that each send almost 64 KiB and stall hold no more than memoryBytes in memory, the rest goes to files; finished, each body reaches the origin whole', async () => {
    const origin = await startTestOrigin({ name: 'o' });
    origin.route('/form', { body: (rec) => `got ${rec.bodyLength}` });
    const ca = await makeTestCa();
    const memoryBytes = 300_000;
    const gw = await startGateway({
      tls: { host: '127.0.0.1', port: 0 },
      limits: { requestBuffering: { memoryBytes } },
      sites: [{ name: 's', hosts: ['*'], origins: [{ url: origin.url }], healthCheck: { enabled: false }, tls: ca.write('s', await ca.leaf(['s.test'])) }],
    });
    const client = http2.connect(`https://127.0.0.1:${gw.gw.httpsAddress!.port}`, { ca: ca.ca, servername: 's.test' });
    try {
      const N = 20;
      const size = 65_536;
      const first = 60_000;
      const streams = Array.from({ length: N }, (_, i) => {
        const stream = client.request({ ':method': 'POST', ':path': `/form?i=${i}`, 'content-length': String(size), 'content-type': 'application/octet-stream' });
        const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
          let status = 0;
          let body = '';
          stream.on('response', (h) => (status = Number(h[':status'])));
          stream.setEncoding('utf8');
          stream.on('data', (c: string) => (body += c));
          stream.on('end', () => resolve({ status, body }));
          stream.on('error', reject);
        });
        stream.write(Buffer.alloc(first, 97));
        return { stream, answer };
      });
      const held = async () => {
        const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
        const of = (where: string) => Number(new RegExp(`^crowdgate_request_body_bytes\\{where="${where}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? NaN);
        return { memory: of('memory'), file: of('file') };
      };
      // Read, and at rest (two readings 100 ms apart the same): a write under way holds its
      // chunk in memory a moment longer, and a spooled body's unwritten bytes count in both.
      let stalled = await held();
      await until(async () => {
        await new Promise((r) => setTimeout(r, 100));
        const h = await held();
        const still = h.memory === stalled.memory && h.file === stalled.file;
        stalled = h;
        return still && h.memory + h.file >= N * first;
      }, 'every stream\'s first bytes read, and at rest');
      expect(stalled.memory).toBeLessThanOrEqual(memoryBytes);
      expect(stalled.file).toBeGreaterThan(0);
      expect(origin.count('/form')).toBe(0);
      for (const s of streams) s.stream.end(Buffer.alloc(size - first, 98));
      const answers = await Promise.all(streams.map((s) => s.answer));
      expect(answers.map((a) => `${a.status} ${a.body}`)).toEqual(Array.from({ length: N }, () => `200 got ${size}`));
      await until(async () => {
        const h = await held();
        return h.memory === 0 && h.file === 0;
      }, 'every body released');
    } finally {
      client.close();
      await gw.close();
      await origin.close();
    }
  });
});
