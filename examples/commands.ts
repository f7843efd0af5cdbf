/**
 * Hashes every file of a directory with `sha256sum`, several at once, and prints the lines in
 * directory order as soon as each one and all before it are done, like `sha256sum *` would.
 *
 *   npx tsx examples/commands.ts [directory]     (default: this examples directory)
 *
 * Each task is an external program spawned without a shell: file names are passed as they are,
 * whatever characters they contain.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { map } from 'rxjs';
import { schedule$, commandTask } from '../src/index.js';

const directory = process.argv[2] ?? fileURLToPath(new URL('.', import.meta.url));
const entries = await readdir(directory, { withFileTypes: true });
const files = entries.filter((e) => e.isFile()).map((e) => e.name).sort();

const run = schedule$(
  files.map((name) => commandTask('sha256sum', ['--', join(directory, name)], { label: `sha256sum ${name}` })),
  { concurrency: 4 },
);

// ordered$ gives the results in input order, each as soon as it and every earlier one are done.
run.ordered$
  // sha256sum escapes unusual file names and prefixes the line with a backslash: take the hash alone.
  .pipe(map((result, i) => `${/[0-9a-f]{64}/.exec(result.stdout)?.[0]}  ${files[i]}`))
  .subscribe({
    next: (line) => console.log(line),
    error: (error) => {
      console.error(String(error));
      process.exitCode = 1;
    },
  });
