#!/usr/bin/env node
/**
 * The command line: parse arguments, load and validate the config, build the Gateway, listen.
 * SIGHUP reloads the config; SIGTERM / SIGINT drain and exit. `--check-config` validates a
 * file like `nginx -t` and exits 0 or 1.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatConfigError, loadConfigFile } from './config/load.js';
import { Gateway } from './gateway.js';

const USAGE = `Usage: crowdgate --config FILE        run the gateway
       crowdgate --check-config FILE  validate FILE, print every error, exit 0 (valid) or 1
       crowdgate --help | --version

Signals: SIGHUP reloads the config (invalid edits are refused, the old config keeps serving);
SIGTERM/SIGINT stop accepting, drain in-flight requests (shutdown.drainTimeoutMs), and exit.`;

export function readVersion(): string {
  try {
    const here = dirname(fileURLToPath(import.meta.url));
    const pkg = JSON.parse(readFileSync(join(here, '..', 'package.json'), 'utf8')) as { version: string };
    return pkg.version;
  } catch {
    return 'unknown';
  }
}

export interface CliArgs {
  mode: 'run' | 'check' | 'help' | 'version';
  file?: string;
  error?: string;
}

export function parseArgs(argv: readonly string[]): CliArgs {
  let mode: CliArgs['mode'] | undefined;
  let file: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    if (flag === '--help' || flag === '-h') return { mode: 'help' };
    if (flag === '--version' || flag === '-v') return { mode: 'version' };
    if (flag === '--config' || flag === '-c' || flag === '--check-config') {
      const value = inline ?? argv[++i];
      if (!value) return { mode: 'help', error: `${flag} needs a file` };
      file = value;
      mode = flag === '--check-config' ? 'check' : 'run';
      continue;
    }
    return { mode: 'help', error: `unknown argument: ${a}` };
  }
  if (!mode) return { mode: 'help', error: 'give --config FILE' };
  return { mode, file };
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (args.mode === 'version') {
    console.log(`crowdgate ${readVersion()}`);
    return 0;
  }
  if (args.mode === 'help') {
    if (args.error) console.error(`crowdgate: ${args.error}\n`);
    console[args.error ? 'error' : 'log'](USAGE);
    return args.error ? 2 : 0;
  }
  const file = args.file!;
  const loaded = await loadConfigFile(file);
  if (!loaded.ok) {
    for (const e of loaded.errors) console.error(formatConfigError(e));
    console.error(`crowdgate: ${file}: ${loaded.errors.length} error(s); ${args.mode === 'check' ? 'invalid' : 'not started'}`);
    return 1;
  }
  for (const w of loaded.warnings ?? []) console.error(`${formatConfigError(w)} (warning)`);
  if (args.mode === 'check') {
    console.log(`crowdgate: ${file}: configuration is valid (${loaded.config.sites.length} site(s))`);
    return 0;
  }

  const gateway = new Gateway({ config: loaded.config, configPath: file });
  process.on('uncaughtException', (err) => gateway.logger.error({ err }, 'uncaught exception (kept running)'));
  process.on('unhandledRejection', (err) => gateway.logger.error({ err }, 'unhandled rejection (kept running)'));
  try {
    await gateway.listen();
  } catch (err) {
    gateway.logger.fatal({ err }, `cannot listen: ${(err as Error).message} (check listen, tls and admin in ${file})`);
    await gateway.close().catch(() => undefined);
    return 1;
  }
  process.on('SIGHUP', () => void gateway.reload('signal'));
  let stopping: { hurry(): void } | undefined;
  const stop = async (signal: string) => {
    // A second signal during shutdown.delayMs drains at once.
    if (stopping) return stopping.hurry();
    const delayMs = gateway.runtime().config.shutdown.delayMs;
    gateway.logger.info({ signal, delayMs }, delayMs > 0 ? `shutting down: /readyz answers 503 for ${delayMs} ms before draining (signal again to drain now)` : 'shutting down');
    const announced = gateway.announceShutdown();
    stopping = announced;
    await announced.elapsed;
    await gateway.drain();
    await gateway.close();
    gateway.logger.flush(() => process.exit(0));
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  return -1; // keep running
}

const isEntry = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === (await realpath(process.argv[1]));
async function realpath(p: string): Promise<string> {
  const { realpathSync } = await import('node:fs');
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}
if (isEntry) {
  main().then(
    (code) => {
      if (code >= 0) process.exit(code);
    },
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
