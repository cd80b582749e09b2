/**
 * A real ACME CA for tests: Debian's pebble (2.4) and pebble-challtestsrv, on 127.0.0.1 and free
 * ports, with real HTTP-01 validation (not PEBBLE_VA_ALWAYS_VALID): challtestsrv serves only DNS,
 * answering every A query with 127.0.0.1, and pebble fetches each challenge over HTTP from the
 * port the test gives as `httpPort` (a challenge-answering server started first: the test's own,
 * or a gateway's plain listener).
 *
 * Pebble's HTTPS certificate is made here with openssl (a throwaway CA and a leaf for 127.0.0.1);
 * `caBundle` is that CA, for the ACME client. Pebble's issuing root is new on every start:
 * `rootPem()` fetches it from the management interface. `orders()` and `issued()` count pebble's
 * own log lines ("Added order", "Issued certificate serial"). `pause()`/`resume()` freeze and thaw
 * pebble by PID (SIGSTOP/SIGCONT). Both processes are killed by PID in `stop()` (and on process
 * exit). Missing binaries are an error naming the package, never a skip.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './free-port.js';
import { trackChild, waitForExit } from './redis-server.js';

export interface Pebble {
  directoryUrl: string;
  /** PEM of the CA that signed pebble's HTTPS certificate: the ACME client's CA bundle. */
  caBundle: string;
  /** Pebble's issuing root (PEM), from its management interface. */
  rootPem(): Promise<string>;
  /** Pebble's intermediate (PEM). */
  intermediatePem(): Promise<string>;
  /** Orders pebble has accepted since it started. */
  orders(): number;
  /** Certificates pebble has issued since it started. */
  issued(): number;
  /** Everything pebble wrote, for failure messages. */
  output(): string;
  /** Freezes pebble (SIGSTOP to its PID) until resume(): connections are accepted, nothing is answered. */
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
}

export interface PebbleOptions {
  /** The port pebble's VA connects to for HTTP-01 (our responder's). */
  httpPort: number;
  /** certificateValidityPeriod in seconds (pebble's default is five years). */
  validitySeconds?: number;
}

const READY_DEADLINE_MS = 10_000;

function binary(name: string): string {
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  const bin = found.stdout.trim();
  if (found.status !== 0 || !bin) throw new Error(`${name} not found on PATH. The ACME tests need a real CA: install it (Debian/Ubuntu: \`apt-get install -y pebble\`).`);
  return bin;
}

function openssl(args: string[], cwd: string): void {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${r.stderr}`);
}

function get(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, timeout: 2_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
  });
}

function tcpOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

async function kill(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  process.kill(child.pid, 'SIGKILL');
  await waitForExit(child, 2_000);
}

/** Starts pebble; a port taken between probing and binding (another test's server) is tried again, twice. */
export async function startPebble(opts: PebbleOptions): Promise<Pebble> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startPebbleOnce(opts);
    } catch (err) {
      lastError = err;
      if (!/address already in use/.test(String(err))) throw err;
    }
  }
  throw lastError;
}

async function startPebbleOnce(opts: PebbleOptions): Promise<Pebble> {
  const pebbleBin = binary('pebble');
  const challtestsrvBin = binary('pebble-challtestsrv');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'crowdgate-pebble-'));

  // Pebble's HTTPS: a throwaway CA and a leaf for 127.0.0.1 / localhost.
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=crowdgate test pebble CA'], dir);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'key.pem', '-out', 'leaf.csr', '-subj', '/CN=localhost'], dir);
  writeFileSync(path.join(dir, 'leaf.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  openssl(['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'cert.pem', '-days', '2', '-extfile', 'leaf.ext'], dir);
  const caBundle = readFileSync(path.join(dir, 'ca.pem'), 'utf8');

  let challtestsrv: ChildProcess | undefined;
  let pebble: ChildProcess | undefined;
  let out = '';

  const stop = async () => {
    await kill(pebble);
    await kill(challtestsrv);
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const dnsPort = await freePort();
    const challMgmtPort = await freePort();
    challtestsrv = spawn(
      challtestsrvBin,
      ['-dns01', `127.0.0.1:${dnsPort}`, '-http01', '', '-https01', '', '-tlsalpn01', '', '-management', `127.0.0.1:${challMgmtPort}`, '-defaultIPv4', '127.0.0.1', '-defaultIPv6', ''],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    trackChild(challtestsrv);
    challtestsrv.stdout?.on('data', (c: Buffer) => (out += c.toString()));
    challtestsrv.stderr?.on('data', (c: Buffer) => (out += c.toString()));

    const acmePort = await freePort();
    const mgmtPort = await freePort();
    const config = {
      pebble: {
        listenAddress: `127.0.0.1:${acmePort}`,
        managementListenAddress: `127.0.0.1:${mgmtPort}`,
        certificate: path.join(dir, 'cert.pem'),
        privateKey: path.join(dir, 'key.pem'),
        httpPort: opts.httpPort,
        tlsPort: await freePort(), // nothing listens there: tls-alpn-01 is not used
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
        ...(opts.validitySeconds !== undefined ? { certificateValidityPeriod: opts.validitySeconds } : {}),
      },
    };
    writeFileSync(path.join(dir, 'pebble.json'), JSON.stringify(config));

    // Wait for challtestsrv's DNS before pebble starts asking it.
    const chDeadline = Date.now() + READY_DEADLINE_MS;
    while (!(await tcpOpen(challMgmtPort))) {
      if (challtestsrv.exitCode !== null) throw new Error(`pebble-challtestsrv exited (${challtestsrv.exitCode}): ${out}`);
      if (Date.now() > chDeadline) throw new Error(`pebble-challtestsrv not up within ${READY_DEADLINE_MS} ms: ${out}`);
      await new Promise((r) => setTimeout(r, 25));
    }

    pebble = spawn(pebbleBin, ['-config', path.join(dir, 'pebble.json'), '-dnsserver', `127.0.0.1:${dnsPort}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' },
    });
    trackChild(pebble);
    pebble.stdout?.on('data', (c: Buffer) => (out += c.toString()));
    pebble.stderr?.on('data', (c: Buffer) => (out += c.toString()));

    const directoryUrl = `https://127.0.0.1:${acmePort}/dir`;
    const deadline = Date.now() + READY_DEADLINE_MS;
    for (;;) {
      if (pebble.exitCode !== null) throw new Error(`pebble exited (${pebble.exitCode}): ${out}`);
      const ok = await get(directoryUrl, caBundle).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`pebble did not serve ${directoryUrl} within ${READY_DEADLINE_MS} ms: ${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }

    const mgmt = async (p: string) => {
      const r = await get(`https://127.0.0.1:${mgmtPort}${p}`, caBundle);
      if (r.status !== 200) throw new Error(`pebble management ${p}: HTTP ${r.status}`);
      return r.body;
    };
    const count = (re: RegExp) => out.match(re)?.length ?? 0;
    return {
      directoryUrl,
      caBundle,
      rootPem: () => mgmt('/roots/0'),
      intermediatePem: () => mgmt('/intermediates/0'),
      orders: () => count(/Added order "[^"]*" to the db/g),
      issued: () => count(/Issued certificate serial/g),
      output: () => out,
      pause: () => process.kill(pebble!.pid!, 'SIGSTOP'),
      resume: () => process.kill(pebble!.pid!, 'SIGCONT'),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
