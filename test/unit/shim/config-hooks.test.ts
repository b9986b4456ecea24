import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/log/logger.js';
import { DEFAULT_LOG, DEFAULT_UPSTREAM, configPathFor, loadShimConfig, parseShimConfig } from '../../../shim/config.js';
import { NoopHooks, loadHooks } from '../../../shim/hooks.js';
import { parseShimArgs, proxySocketFor } from '../../../shim/main.js';
import { isShimError } from '../../../shim/ttrpc/errors.js';

let dir: string | undefined;
afterEach(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('shim config', () => {
  it('a missing file gives the defaults', () => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-shim-cfg-'));
    expect(loadShimConfig(join(dir, 'containerd.sock'))).toEqual({
      host: 'local', cluster: null, runcRoot: null, runcBinary: null, upstream: DEFAULT_UPSTREAM, log: DEFAULT_LOG,
    });
  });

  it('is read from the directory of containerd’s socket', () => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-shim-cfg-'));
    writeFileSync(join(dir, 'ferry-shim.json'), JSON.stringify({ host: 'host-a', cluster: '/c.json', runcRoot: '/run/r', runcBinary: '/bin/r', upstream: '/u', log: '/l' }));
    expect(configPathFor(`unix://${dir}/containerd.sock`)).toBe(join(dir, 'ferry-shim.json'));
    expect(loadShimConfig(`${dir}/containerd.sock`)).toEqual({ host: 'host-a', cluster: '/c.json', runcRoot: '/run/r', runcBinary: '/bin/r', upstream: '/u', log: '/l' });
  });

  it('refuses unknown keys, wrong types and bad JSON with E_SHIM_CONFIG', () => {
    expect(() => parseShimConfig({ runcroot: '/x' })).toThrow(expect.objectContaining({ code: 'E_SHIM_CONFIG' }));
    expect(() => parseShimConfig({ runcRoot: 3 })).toThrow(/runcRoot/);
    dir = mkdtempSync(join(tmpdir(), 'ferry-shim-cfg-'));
    writeFileSync(join(dir, 'ferry-shim.json'), '{');
    try {
      loadShimConfig(join(dir, 's'));
      expect.unreachable();
    } catch (e: unknown) {
      expect(isShimError(e, 'E_SHIM_CONFIG')).toBe(true);
    }
  });
});

describe('loadHooks', () => {
  const config = parseShimConfig({});
  it('falls back to NoopHooks when ferry-hooks.js is absent, fails to load, or has no createHooks', async () => {
    expect((await loadHooks(config, silentLogger(), async () => null)).source).toBe('noop');
    const broken = await loadHooks(config, silentLogger(), async () => {
      throw new Error('syntax');
    });
    expect(broken).toMatchObject({ source: 'noop', reason: expect.stringContaining('syntax') });
    expect((await loadHooks(config, silentLogger(), async () => ({}))).reason).toMatch(/createHooks/);
    const throwing = await loadHooks(config, silentLogger(), async () => ({ createHooks: () => { throw new Error('no cluster'); } }));
    expect(throwing).toMatchObject({ source: 'noop', reason: expect.stringContaining('no cluster') });
  });

  it('uses createHooks(config, log) when it is there', async () => {
    const mine = new NoopHooks();
    const got = await loadHooks(config, silentLogger(), async () => ({ createHooks: (c: unknown) => (c === config ? mine : null) }));
    expect(got).toEqual({ hooks: mine, source: 'ferry-hooks' });
  });

  it('NoopHooks: deletions proceed, containers start fresh', async () => {
    const n = new NoopHooks();
    expect(await n.onDelete()).toEqual({ action: 'forward' });
    expect(await n.claim()).toBeNull();
  });
});

describe('shim argv', () => {
  it('parses what containerd 1.6 passes to start and delete', () => {
    expect(parseShimArgs(['-namespace', 'k8s.io', '-address', '/run/containerd/containerd.sock', '-publish-binary', '/usr/bin/containerd', '-id', 'abc', 'start'])).toEqual({
      namespace: 'k8s.io', address: '/run/containerd/containerd.sock', publishBinary: '/usr/bin/containerd', id: 'abc', bundle: null, action: 'start',
    });
    expect(parseShimArgs(['-namespace', 'n', '-address', 'a', '-publish-binary', 'p', '-id', 'x', '-bundle', '/b', '-debug', 'delete'])).toMatchObject({ bundle: '/b', action: 'delete' });
    expect(parseShimArgs(['-v'])).toMatchObject({ action: null });
  });

  it('derives one proxy socket per upstream address, under /run/containerd/s', () => {
    const a = proxySocketFor('unix:///run/containerd/s/aaa');
    expect(a).toMatch(/^\/run\/containerd\/s\/[0-9a-f]{64}$/);
    expect(proxySocketFor('unix:///run/containerd/s/aaa')).toBe(a);
    expect(proxySocketFor('unix:///run/containerd/s/bbb')).not.toBe(a);
    expect(a.length).toBeLessThan(108); // sun_path
  });
});
