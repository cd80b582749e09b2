/**
 * The hottest paths recently requested, for the status page: a small bounded table counting
 * requests per site+path and how they were answered. Never exported as metric labels (raw
 * paths must not become series); bounded so a random-path flood cannot grow it.
 */
import type { CacheState } from '../outcome.js';

/** One row as top() reports it. */
export interface HotKeyView {
  site: string;
  path: string;
  count: number;
  states: Partial<Record<CacheState, number>>;
}

export interface HotKeyRow {
  site: string;
  path: string;
  /** False once the row left the table (decayed to zero or evicted): counts into it are lost. */
  live: boolean;
  count: number;
  states: Partial<Record<CacheState, number>>;
}

export class HotKeys {
  /** site -> path -> row: looked up with the strings as given, no key string built per request. */
  private readonly sites = new Map<string, Map<string, HotKeyRow>>();
  private size = 0;

  constructor(private readonly capacity: number) {}

  note(site: string, path: string, state: CacheState): void {
    this.noteRow(this.rowFor(site, SHARED_STATES.has(state) ? path : withoutQueryValues(path)), state);
  }

  /** The row for site+path, made when missing; a caller may keep it while `live` is true. */
  rowFor(site: string, path: string): HotKeyRow {
    let rows = this.sites.get(site);
    if (!rows) this.sites.set(site, (rows = new Map()));
    let row = rows.get(path);
    if (!row) {
      if (this.size >= this.capacity) this.evictColdest();
      row = { site, path: path.slice(0, 200), live: true, count: 0, states: {} };
      rows.set(path, row);
      this.size++;
    }
    return row;
  }

  /** One request counted into a row from rowFor() (which must still be live). */
  noteRow(row: HotKeyRow, state: CacheState): void {
    row.count++;
    row.states[state] = (row.states[state] ?? 0) + 1;
  }

  /** Halve every count so the table tracks recent traffic (called periodically). */
  decay(): void {
    for (const [site, rows] of this.sites) {
      for (const [path, row] of rows) {
        row.count = Math.floor(row.count / 2);
        for (const k of Object.keys(row.states) as CacheState[]) row.states[k] = Math.floor(row.states[k]! / 2);
        if (row.count === 0) {
          row.live = false;
          rows.delete(path);
          this.size--;
        }
      }
      if (rows.size === 0) this.sites.delete(site);
    }
  }

  /** The n busiest rows, as copies (callers keep or serialise them as they like). */
  top(n: number): HotKeyView[] {
    const all: HotKeyRow[] = [];
    for (const rows of this.sites.values()) for (const row of rows.values()) all.push(row);
    return all
      .sort((a, b) => b.count - a.count)
      .slice(0, n)
      .map((r) => ({ site: r.site, path: r.path, count: r.count, states: { ...r.states } }));
  }

  /**
   * Evicts the coldest row: the oldest one counted at most once when there is one (a row
   * cannot be colder, and under a flood of distinct paths, where every new path evicts, the
   * scan then stops at the first row instead of reading all of them per request), else the
   * first with the lowest count.
   */
  private evictColdest(): void {
    let coldRows: Map<string, HotKeyRow> | undefined;
    let coldPath: string | undefined;
    let cold = Infinity;
    scan: for (const rows of this.sites.values()) {
      for (const [path, row] of rows) {
        if (row.count < cold) {
          cold = row.count;
          coldRows = rows;
          coldPath = path;
          if (cold <= 1) break scan;
        }
      }
    }
    if (coldRows && coldPath !== undefined) {
      coldRows.get(coldPath)!.live = false;
      coldRows.delete(coldPath);
      this.size--;
    }
  }
}

/** Answers from a copy shared by everyone: their targets are shown whole. */
const SHARED_STATES: ReadonlySet<CacheState> = new Set(['hit', 'stale', 'updating', 'revalidated']);

/**
 * A target with its query values left out (`/wp-login.php?action=…&key=…`), for every answer
 * not from a shared copy: its query may carry one user's token (a reset link, a login ticket),
 * which the status page would show to whoever reads it (attacker trial; a reset link is opened
 * logged out, as a miss or pass). Parameter names stay, and a hot page is a hit, shown whole.
 * The values of parameters that name a page stay too (namesPage) (a crowd on a wiki page nothing may
 * store was `/doku.php?id=…` on the status page, and which page it was could not be told:
 * new-user trial).
 */
export function withoutQueryValues(path: string): string {
  const q = path.indexOf('?');
  if (q === -1) return path;
  const params = path
    .slice(q + 1)
    .split('&')
    .map((p) => {
      const eq = p.indexOf('=');
      return eq === -1 || namesPage(p.slice(0, eq), p.slice(eq + 1)) ? p : `${p.slice(0, eq)}=…`;
    });
  return `${path.slice(0, q)}?${params.join('&')}`;
}

/**
 * Whether a query parameter names a page or what is done to it: DokuWiki's `id`, `do` and
 * `rev`, MediaWiki's `title`, `action`, `oldid`, `diff` and `curid`, WordPress's `p`, `page_id`,
 * `cat`, `tag` and `paged`, and `page`. The same names carry secrets elsewhere
 * (`download.php?id=<capability>`, a GET login's `p=<password>`: review), so a numbering one
 * shows only digits, and the others no value that looks like a token (a run of 12 or more
 * letters, digits, `-` and `_` with both letters and digits in it) or is long. Not a search's
 * (`s`, `q`, `search`): what one visitor looked for.
 */
function namesPage(name: string, value: string): boolean {
  const n = name.toLowerCase();
  if (NUMBER_PARAMS.has(n)) return /^\d{1,12}$/.test(value);
  if (!NAME_PARAMS.has(n) || value.length > 100) return false;
  for (const run of value.match(/[A-Za-z0-9_-]{12,}/g) ?? []) if (/\d/.test(run) && /[A-Za-z]/.test(run)) return false;
  return true;
}
const NUMBER_PARAMS: ReadonlySet<string> = new Set(['p', 'page_id', 'paged', 'cat', 'rev', 'oldid', 'diff', 'curid']);
const NAME_PARAMS: ReadonlySet<string> = new Set(['id', 'do', 'title', 'action', 'tag', 'page']);
