/**
 * Per-test resources for integration suites: origins and gateways started through these are
 * closed after each test (in reverse order), as is anything registered with `cleanups.push`.
 */
import { afterEach } from 'vitest';
import { startTestOrigin, type TestOrigin } from './test-origin.js';
import { startGateway, type StartedGateway } from './gateway.js';

export function useFixtures() {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  return {
    cleanups,
    async origin(name?: string): Promise<TestOrigin> {
      const o = await startTestOrigin(name ? { name } : {});
      cleanups.push(() => o.close());
      return o;
    },
    async gateway(...args: Parameters<typeof startGateway>): Promise<StartedGateway> {
      const g = await startGateway(...args);
      cleanups.push(() => g.close());
      return g;
    },
  };
}
