import { describe, expect, it } from 'vitest';
import { procAddr, tuplesIn } from '../../../agent/lazy/tcp-tuples.js';

describe('the connections a killed task would leave lingering', () => {
  it('reads /proc/net/tcp addresses', () => {
    expect(procAddr('0100007F:6DE5')).toBe('127.0.0.1:28133');
    expect(procAddr('00000000000000000000000001000000:0050')).toBe('[0:0:0:0:0:0:0:1]:80');
  });

  it('keeps the connections of the given sockets, not their listeners', () => {
    const text = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100007F:6DE5 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0',
      '   1: 0100007F:6DE5 0100007F:EE2C 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 1 18 -1',
      '   2: 0100007F:1F90 0100007F:EE2D 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0 20 4 1 18 -1',
    ].join('\n');
    expect(tuplesIn(text, new Set(['111', '222']))).toEqual([{ local: '127.0.0.1:28133', remote: '127.0.0.1:60972' }]);
  });
});
