import { describe, expect, it } from 'vitest';
import { PriorityClasses } from '../../src/runtime.js';

describe('PriorityClasses', () => {
  it('orders the configured classes, puts "default" last and background below them all', () => {
    const p = new PriorityClasses([{ name: 'checkout' }, { name: 'default' }, { name: 'api' }]);
    expect(p.names).toEqual(['checkout', 'api', 'default']);
    expect(p.default).toBe(2);
    expect(p.background).toBe(3);
    expect(p.count).toBe(4);
    expect(p.configured).toBe(3); // "default" named in the config is not counted twice
    expect(p.indexOf('api')).toBe(1);
    expect(p.nameOf(p.default)).toBe('default');
    expect(p.nameOf(p.background)).toBe('background');
  });

  it('has "default" alone when nothing is configured', () => {
    const p = new PriorityClasses([]);
    expect(p.names).toEqual(['default']);
    expect([p.default, p.background, p.count, p.configured]).toEqual([0, 1, 2, 1]);
  });
});
