import { describe, expect, it } from 'vitest';
import { agentMallocTunables } from '../../../src/cli/local-cluster.js';

describe('agent malloc tunables', () => {
  it('adds the chunk-reuse settings when the caller has none', () => {
    expect(agentMallocTunables(undefined)).toBe('glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824');
  });

  it('keeps the caller\'s own settings, which win over ours', () => {
    expect(agentMallocTunables('glibc.malloc.mmap_threshold=1048576:glibc.pthread.rseq=0'))
      .toBe('glibc.malloc.mmap_threshold=1048576:glibc.pthread.rseq=0:glibc.malloc.trim_threshold=1073741824');
  });
});
