/**
 * How acme-client reaches a CA. acme-client sends every request through one shared axios
 * instance; this module adds one request interceptor to it (once) that, for the origins a manager
 * registered (its directory URL's), sets:
 *   - an https.Agent trusting the manager's CA bundle (a test CA such as pebble's uses its own root),
 *   - a request timeout, so a CA that accepts and never answers is a failure, not a hang,
 *   - no retries inside acme-client (its default is five, 5 s apart and growing, with no bound on a
 *     server's Retry-After): the manager retries whole attempts itself, with its own backoff and clock.
 * Other origins (another user of acme-client in the process) are left as acme-client sets them.
 */
import https from 'node:https';
import acme from 'acme-client';

interface OriginSettings {
  agent: https.Agent;
  timeoutMs: number;
}

/** Per origin, the registrations still open; the newest one is used. */
const origins = new Map<string, OriginSettings[]>();
let installed = false;

function install(): void {
  if (installed) return;
  installed = true;
  const settings = (acme.axios.defaults as unknown as { acmeSettings: { retryMaxAttempts: number } }).acmeSettings;
  acme.axios.interceptors.request.use((config) => {
    if (!config.url) return config;
    let origin: string;
    try {
      origin = new URL(config.url).origin;
    } catch {
      return config;
    }
    const s = origins.get(origin)?.at(-1);
    if (!s) return config;
    config.httpsAgent = s.agent;
    config.timeout = s.timeoutMs;
    // acme-client's retry interceptor counts attempts in this field: start it at its maximum.
    (config as unknown as { retryAttempt: number }).retryAttempt = settings.retryMaxAttempts;
    return config;
  });
  // A request that got no response (refused, reset, timed out, bad TLS) reaches acme-client's retry
  // interceptor, which, out of retries, reads `response.config` of the missing response and throws
  // "Cannot read properties of undefined", losing the cause. This handler runs first (moved to the
  // front of axios's response chain) and turns such an error into one naming the URL and the cause;
  // an error without `config` passes acme-client's interceptor untouched.
  acme.axios.interceptors.response.use(undefined, (error: unknown) => {
    const e = error as { config?: { url?: string }; response?: unknown; code?: string; message?: string; cause?: { message?: string } };
    const url = e?.config?.url;
    if (!url || e.response !== undefined || !isRegistered(url)) return Promise.reject(error);
    const cause = [e.code, e.cause?.message ?? e.message].filter(Boolean).join(' ');
    return Promise.reject(new Error(`ACME request to ${url} failed: ${cause}`));
  });
  const handlers = (acme.axios.interceptors.response as unknown as { handlers?: unknown[] }).handlers;
  if (Array.isArray(handlers) && handlers.length > 1) handlers.unshift(handlers.pop());
}

function isRegistered(url: string): boolean {
  try {
    return origins.has(new URL(url).origin);
  } catch {
    return false;
  }
}

/**
 * Registers how to reach the CA at `directoryUrl`; while several are open for one origin, the newest is used.
 * Returns the function that removes this registration (if still the current one) and closes its sockets.
 */
export function registerAcmeOrigin(directoryUrl: string, opts: { ca?: string | Buffer | undefined; timeoutMs: number }): () => void {
  install();
  const origin = new URL(directoryUrl).origin;
  const settings: OriginSettings = {
    agent: new https.Agent({ keepAlive: true, ...(opts.ca !== undefined ? { ca: opts.ca } : {}) }),
    timeoutMs: opts.timeoutMs,
  };
  origins.set(origin, [...(origins.get(origin) ?? []), settings]);
  return () => {
    const rest = (origins.get(origin) ?? []).filter((s) => s !== settings);
    if (rest.length > 0) origins.set(origin, rest);
    else origins.delete(origin);
    settings.agent.destroy();
  };
}
