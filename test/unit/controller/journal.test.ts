import { mkdtempSync, appendFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FileJournal, type JournalRecord } from '../../../src/controller/journal.js';

const rec = (migrationId: string, phase: JournalRecord['phase']): JournalRecord =>
  ({ ts: '2026-01-01T00:00:00Z', migrationId, phase, container: 'c', source: 'a', destination: 'b' });

describe('FileJournal', () => {
  const dirs: string[] = [];
  afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });
  const path = (): string => { const d = mkdtempSync(join(tmpdir(), 'ferry-journal-')); dirs.push(d); return join(d, 'j.jsonl'); };

  it('reports only unfinished migrations, by their last phase', () => {
    const p = path();
    const j = new FileJournal(p);
    j.append(rec('m-aaaaaa', 'preflight'));
    j.append(rec('m-aaaaaa', 'transferring'));
    j.append(rec('m-bbbbbb', 'preflight'));
    j.append(rec('m-bbbbbb', 'done'));
    j.append(rec('m-cccccc', 'committed'));
    j.close();
    const open = new FileJournal(p).open();
    expect(open.map((r) => [r.migrationId, r.phase]).sort()).toEqual([['m-aaaaaa', 'transferring'], ['m-cccccc', 'committed']]);
  });

  it('ignores a torn last line', () => {
    const p = path();
    const j = new FileJournal(p);
    j.append(rec('m-aaaaaa', 'restoring'));
    j.close();
    appendFileSync(p, '{"ts":"2026-01-01","migrationId":"m-aaaaaa","pha');
    expect(new FileJournal(p).open().map((r) => r.phase)).toEqual(['restoring']);
  });
});
