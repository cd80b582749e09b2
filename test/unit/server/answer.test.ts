import pino from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { ManualClock } from '../../../src/clock.js';
import { noteShed, SHED_LOG_MS } from '../../../src/server/answer.js';
import type { Ctx } from '../../../src/server/context.js';

describe('noteShed (the shedding warning)', () => {
  it('warns at a site\'s first refusal, then at most once per SHED_LOG_MS with the refusals since the line before, by reason', () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const clock = new ManualClock(1_000_000);
    const ctx = { deps: { clock, logger } } as unknown as Pick<Ctx, 'deps'>;
    noteShed(ctx, 'blog', 'predicted_wait');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40, site: 'blog', refused: 1, reasons: { predicted_wait: 1 } });
    expect(lines[0]!.sinceMs).toBeUndefined();
    for (let i = 0; i < 5; i++) {
      clock.advance(1_000);
      noteShed(ctx, 'blog', i % 2 === 0 ? 'deadline' : 'predicted_wait');
    }
    noteShed(ctx, 'wiki', 'queue_full'); // another site has its own line
    expect(lines.map((l) => l.site)).toEqual(['blog', 'wiki']);
    clock.advance(SHED_LOG_MS - 5_000);
    noteShed(ctx, 'blog', 'deadline');
    expect(lines).toHaveLength(3);
    expect(lines[2]).toMatchObject({ site: 'blog', refused: 6, reasons: { deadline: 4, predicted_wait: 2 }, sinceMs: SHED_LOG_MS });
  });

  it('writes the refusals of a burst that stopped SHED_LOG_MS after the line before, not only at the next refusal (normal-day trial: 94 refused, one line saying 1)', () => {
    vi.useFakeTimers();
    try {
      const lines: Array<Record<string, unknown>> = [];
      const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
      const clock = new ManualClock(2_000_000);
      const ctx = { deps: { clock, logger } } as unknown as Pick<Ctx, 'deps'>;
      noteShed(ctx, 'blog', 'deadline');
      for (let i = 0; i < 93; i++) noteShed(ctx, 'blog', 'deadline');
      expect(lines).toHaveLength(1);
      clock.advance(SHED_LOG_MS);
      vi.advanceTimersByTime(SHED_LOG_MS);
      expect(lines).toHaveLength(2);
      expect(lines[1]).toMatchObject({ level: 40, site: 'blog', refused: 93, reasons: { deadline: 93 }, sinceMs: SHED_LOG_MS });
      // Nothing more refused: no further line.
      clock.advance(3 * SHED_LOG_MS);
      vi.advanceTimersByTime(3 * SHED_LOG_MS);
      expect(lines).toHaveLength(2);
    } finally {
      vi.useRealTimers();
    }
  });
});
