// Where the Ferry package lives, from any compiled or source file inside it.

import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FerryError } from '../protocol/errors.js';

/** The package root, wherever the compiled file sits. */
export function packageRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json'))) {
    const up = dirname(d);
    if (up === d) throw new FerryError('E_INTERNAL', 'cannot find the Ferry package root');
    d = up;
  }
  return d;
}
