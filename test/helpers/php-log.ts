/**
 * PHP's built-in server (`php -S`) as the origin of a test (mediawiki.ts, wordpress.ts): its
 * request log, read from its stderr, and a way to wait until it has logged every request it
 * answered so far. php -S logs a request after answering it, one worker answers one request at
 * a time, and it logs them in order.
 */

/** One request line from php -S's log. */
export interface PhpRequest {
  status: number;
  method: string;
  /** Request target as received (path and query). */
  url: string;
}

/** What a test reads of a real site's php -S (mediawiki.ts, wordpress.ts). */
export interface PhpServed {
  /** http://127.0.0.1:PORT of php -S (the origin). */
  readonly url: string;
  /** The temp dir holding everything (removed by stop()). */
  readonly dir: string;
  /** The administrator account the installer created. */
  readonly admin: { name: string; password: string };
  /** Every request php -S has logged so far, in order. */
  readonly requests: PhpRequest[];
  /**
   * How many logged requests match (method + ' ' + url, e.g. /^GET \/index\.php\?title=X$/).
   * php -S logs a request on stderr after answering it, so call sync() first.
   */
  count(match: RegExp): number;
  /** Resolves once every request php -S answered before this call is in `requests` (a static file's log line). */
  sync(): Promise<void>;
  /** Everything php -S wrote to stderr (its request log, warnings). */
  output(): string;
  /** Stops what the helper started, by PID, and removes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

export interface PhpLog {
  /** Every request php -S has logged so far, in order. */
  readonly requests: PhpRequest[];
  /** Feed it php -S's stderr. */
  onStderr(chunk: Buffer): void;
  /** Everything php -S wrote to stderr (its request log, warnings). */
  output(): string;
  /** How many logged requests match (method + ' ' + url, e.g. /^GET \/index\.php\?title=X$/); call sync() first. */
  count(match: RegExp): number;
  /**
   * Resolves once every request php -S answered before this call is in `requests`: asks for
   * `marker` (a static file's path, answered without running PHP) with a fresh query and waits
   * for its log line.
   */
  sync(origin: string, marker: string): Promise<void>;
}

export function phpLog(): PhpLog {
  let stderr = '';
  let pending = '';
  let syncs = 0;
  const requests: PhpRequest[] = [];
  return {
    requests,
    onStderr(chunk) {
      const text = chunk.toString('utf8');
      stderr += text;
      pending += text;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        // [Wed Dec  2 19:50:00 2026] 127.0.0.1:54321 [200]: GET /index.php?title=X
        const m = /\] \S+ \[(\d{3})\]: ([A-Z]+) (\S+)/.exec(line);
        if (m) requests.push({ status: Number(m[1]), method: m[2]!, url: m[3]! });
      }
    },
    output: () => stderr,
    count: (match) => requests.filter((r) => match.test(`${r.method} ${r.url}`)).length,
    async sync(origin, marker) {
      const tag = `${marker}?sync=${++syncs}`;
      const res = await fetch(`${origin}${tag}`);
      await res.arrayBuffer();
      const deadline = Date.now() + 5_000;
      while (!requests.some((r) => r.url === tag)) {
        if (Date.now() > deadline) throw new Error(`php -S did not log ${tag} within 5 s:\n${stderr.slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    },
  };
}
