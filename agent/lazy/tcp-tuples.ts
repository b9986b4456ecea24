// The TCP connections a set of processes owns, as ss(8) filters: what must not linger once they are killed.

import { readFile, readdir, readlink } from 'node:fs/promises';

export interface TcpTuple { local: string; remote: string }

/** Pure: "0100007F:6DF5" (IPv4) or a 32-digit IPv6 address as /proc/net/tcp{,6} write them, to "127.0.0.1:28149" / "[::1]:28149". */
export function procAddr(hex: string): string {
  const [a, p] = hex.split(':') as [string, string];
  const port = parseInt(p, 16);
  if (a.length === 8) {
    const n = parseInt(a, 16);
    return `${n & 255}.${(n >>> 8) & 255}.${(n >>> 16) & 255}.${n >>> 24}:${port}`;
  }
  const words: string[] = [];
  for (let i = 0; i < 32; i += 8) {
    const w = a.slice(i, i + 8);
    // Each 32-bit word is in host (little-endian) order.
    words.push(w.slice(6, 8) + w.slice(4, 6), w.slice(2, 4) + w.slice(0, 2));
  }
  return `[${words.map((w) => w.replace(/^0+(?=.)/, '')).join(':').toLowerCase()}]:${port}`;
}

/** Pure: the non-listening sockets of a /proc/net/tcp{,6} text whose inode is in `inodes`. */
export function tuplesIn(text: string, inodes: ReadonlySet<string>): TcpTuple[] {
  const out: TcpTuple[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] === '0A' || !inodes.has(f[9]!)) continue;
    out.push({ local: procAddr(f[1]!), remote: procAddr(f[2]!) });
  }
  return out;
}

/** The connections (not listeners) of these processes, from their fds and their network namespace's tables. */
export async function tcpTuplesOf(pids: readonly number[]): Promise<TcpTuple[]> {
  const inodes = new Set<string>();
  for (const pid of pids) {
    for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      const m = /^socket:\[(\d+)\]$/.exec(await readlink(`/proc/${pid}/fd/${fd}`).catch(() => ''));
      if (m) inodes.add(m[1]!);
    }
  }
  if (inodes.size === 0 || pids.length === 0) return [];
  const out: TcpTuple[] = [];
  for (const t of ['tcp', 'tcp6']) out.push(...tuplesIn(await readFile(`/proc/${pids[0]}/net/${t}`, 'utf8').catch(() => ''), inodes));
  return out;
}
