// The controller's write-ahead journal: every transition is on disk before it is acted on.

import { mkdirSync, openSync, readFileSync, writeSync, fsyncSync, closeSync } from 'node:fs';
import { dirname } from 'node:path';
import { z } from 'zod';
import { PHASES, isTerminal, type Phase } from '../migration/state.js';

export const JournalRecord = z.object({
  ts: z.string(),
  migrationId: z.string(),
  phase: z.enum(PHASES),
  container: z.string(),
  source: z.string(),
  destination: z.string(),
  data: z.record(z.string(), z.unknown()).optional(),
});
export type JournalRecord = z.infer<typeof JournalRecord>;

/** The store behind the journal; a distributed store (etcd) can replace the file later. */
export interface JournalStore {
  append(r: JournalRecord): void;
  /** The last record of every migration that has not reached a terminal phase. */
  open(): JournalRecord[];
  close(): void;
}

/** JSON lines, fsync'd per record: a crash loses at most the record being written, and a torn last line is ignored. */
export class FileJournal implements JournalStore {
  private fd: number;
  constructor(private readonly path: string) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.fd = openSync(path, 'a', 0o600);
  }

  append(r: JournalRecord): void {
    writeSync(this.fd, `${JSON.stringify(r)}\n`);
    fsyncSync(this.fd);
  }

  open(): JournalRecord[] {
    const last = new Map<string, JournalRecord>();
    for (const line of readFileSync(this.path, 'utf8').split('\n')) {
      if (!line.trim()) continue;
      let rec: JournalRecord;
      try {
        rec = JournalRecord.parse(JSON.parse(line));
      } catch {
        continue; // torn write at the tail
      }
      last.set(rec.migrationId, rec);
    }
    return [...last.values()].filter((r) => !isTerminal(r.phase as Phase));
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** In-memory journal for unit tests. */
export class MemoryJournal implements JournalStore {
  readonly records: JournalRecord[] = [];
  append(r: JournalRecord): void { this.records.push(r); }
  open(): JournalRecord[] {
    const last = new Map<string, JournalRecord>();
    for (const r of this.records) last.set(r.migrationId, r);
    return [...last.values()].filter((r) => !isTerminal(r.phase as Phase));
  }
  close(): void {}
}
