// Small address helpers.

/** "127.0.0.1:7701" → ["127.0.0.1", 7701]. */
export function splitHostPort(s: string): [string, number] {
  const i = s.lastIndexOf(':');
  return [s.slice(0, i), Number(s.slice(i + 1))];
}
