/**
 * A test client's cookie jar: names and values only (every cookie is sent on every path, which
 * the real sites under test do not mind), as the MediaWiki and WordPress tests keep them.
 */
export class CookieJar extends Map<string, string> {
  /** Takes a response's Set-Cookie field(s): a cookie set empty, `deleted` or expiring in the past is dropped. */
  take(setCookie: string | string[] | undefined): void {
    for (const line of Array.isArray(setCookie) ? setCookie : setCookie ? [setCookie] : []) {
      const pair = line.split(';')[0] ?? '';
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      // A cookie set to expire in the past is the site clearing it (WordPress: a year ago; MediaWiki: 1970).
      const expires = /;\s*expires=([^;]*)/i.exec(line)?.[1];
      if (value === '' || value === 'deleted' || (expires !== undefined && Date.parse(expires) < Date.now())) this.delete(name);
      else this.set(name, value);
    }
  }

  /** The Cookie field to send, or undefined when the jar is empty. */
  header(): string | undefined {
    return this.size === 0 ? undefined : [...this].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}
