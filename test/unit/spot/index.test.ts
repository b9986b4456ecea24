// The watcher factory: provider selection, documented endpoints, configuration errors.

import { describe, expect, it } from 'vitest';
import { AwsWatcher, AzureWatcher, GcpWatcher, createWatcher, DEFAULT_ENDPOINTS } from '../../../agent/spot/index.js';
import { AzureWatcher as AzureWatcherOldPath } from '../../../agent/spot/azure.js';
import { silentLogger } from '../../../src/log/logger.js';
import { ManualClock } from './manual-clock.js';

describe('createWatcher', () => {
  it('builds nothing for provider none', () => {
    expect(createWatcher({ provider: 'none' }, silentLogger())).toBeNull();
  });

  it.each([
    ['aws', AwsWatcher],
    ['gcp', GcpWatcher],
    ['azure', AzureWatcher],
  ] as const)('builds the %s watcher on its documented endpoint', (provider, cls) => {
    const w = createWatcher({ provider }, silentLogger());
    expect(w).toBeInstanceOf(cls);
    expect(w?.endpoint).toBe(DEFAULT_ENDPOINTS[provider]);
  });

  it('takes the endpoint, subscribes onNotice and uses the given clock', () => {
    const onNotice = (): void => {};
    const w = createWatcher({ provider: 'azure', endpoint: 'http://127.0.0.1:8080', pollMs: 250 }, silentLogger(), onNotice, new ManualClock());
    expect(w?.endpoint).toBe('http://127.0.0.1:8080');
    expect(w?.listeners('notice')).toEqual([onNotice]);
    // agent/server.ts still imports the Azure watcher from its old path and checks instanceof against it.
    expect(w).toBeInstanceOf(AzureWatcherOldPath);
  });

  it.each([
    { provider: 'aws', pollMs: 0 },
    { provider: 'aws', pollMs: 1.5 },
    { provider: 'gcp', endpoint: 'not a url' },
    { provider: 'gcp', endpoint: 'file:///etc/passwd' },
    { provider: 'oracle' },
  ])('rejects %o with E_CONFIG', (c) => {
    expect(() => createWatcher(c as Parameters<typeof createWatcher>[0], silentLogger())).toThrow(expect.objectContaining({ code: 'E_CONFIG' }));
  });
});
