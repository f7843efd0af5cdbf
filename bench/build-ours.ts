// Compiles src/ to plain JavaScript for the bench, file by file (same layout, so the library
// still finds its worker entry next to itself). Why: run from src/ under tsx, the library's
// workers load tsx too, and tsx costs ~350 ms or more per Node start on this machine; the
// peers' workers run plain Node, and so do the workers of anyone using the published package.
// Compiled, the library strips tsx from its workers' flags. `--ours-src` measures src/ as is.
// The chaos tests build their compiled copy with the same two functions (transpileFiles and
// bundleWorkerEntry).
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';

const root = fileURLToPath(new URL('..', import.meta.url));
const sourceDir = join(root, 'src');
const outDir = fileURLToPath(new URL('./.ours-build/', import.meta.url));

/** What was built, for the report. */
export interface OursBuild {
  /** file: URL of the compiled src/index.js, for `import()`. */
  entry: string;
  files: number;
  /** Commit of the checkout, and whether src/ differs from it (uncommitted edits are built too). */
  commit: string;
  srcDirty: boolean;
}

/**
 * Transpiles every src/**\/*.ts into bench/.ours-build/ (erased fresh each time; no type check,
 * `npm run typecheck` does that), so measurements see one consistent snapshot of src/.
 *
 * @example
 * const { entry } = buildOurs();
 * const { schedule$ } = await import(entry);
 * @returns where the compiled entry is, and which source it came from
 * @throws when a source file has a syntax error
 */
export function buildOurs(): OursBuild {
  rmSync(outDir, { recursive: true, force: true });
  const files = transpileFiles(listTypeScript(sourceDir), sourceDir, outDir);
  bundleWorkerEntry(join(outDir, 'child', 'worker-main.cjs'));
  return { entry: pathToFileURL(join(outDir, 'index.js')).href, files, ...gitState() };
}

/**
 * Transpiles each TypeScript file on its own (no type check) to `outDir`, keeping its path
 * relative to `base`, `.ts` becoming `.js`.
 *
 * @example
 * transpileFiles(listTypeScript('/repo/src'), '/repo', '/tmp/copy'); // writes /tmp/copy/src/index.js, ...
 * @returns how many files were written
 * @throws naming the file, when one has a syntax error
 */
export function transpileFiles(files: readonly string[], base: string, outDir: string): number {
  for (const file of files) {
    const output = ts.transpileModule(readFileSync(file, 'utf8'), {
      fileName: file,
      reportDiagnostics: true,
      compilerOptions: {
        module: ts.ModuleKind.ESNext,
        target: ts.ScriptTarget.ES2022,
        verbatimModuleSyntax: true,
      },
    });
    const errors = output.diagnostics?.filter((diagnostic) => diagnostic.category === ts.DiagnosticCategory.Error) ?? [];
    if (errors.length > 0) {
      const text = ts.flattenDiagnosticMessageText(errors[0]!.messageText, '\n');
      throw new Error(`${relative(root, file)}: ${text}`);
    }
    const target = join(outDir, relative(base, file)).replace(/\.ts$/, '.js');
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, output.outputText);
  }
  return files.length;
}

/**
 * Bundles the worker entry into one CommonJS file by running package.json's `build:worker`
 * script with only its `--outfile` changed, so the copy is built exactly as the package is: the
 * compiled library forks this file when it finds it beside its own.
 *
 * @example
 * bundleWorkerEntry('/tmp/lib/child/worker-main.cjs');
 * @param outfile - where to write the bundle
 * @throws when the entry or what it imports does not build
 */
export function bundleWorkerEntry(outfile: string): void {
  const { scripts } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const [command, ...args] = scripts['build:worker']!.trim().split(/\s+/);
  if (command !== 'esbuild' || !args.some((arg) => arg.startsWith('--outfile='))) {
    throw new Error(`package.json's build:worker is not an esbuild command with --outfile=: ${scripts['build:worker']}`);
  }
  // The command line, not esbuild's JavaScript API: that one leaves a service process running
  // for the rest of the caller's life, which a test counting its child processes would see.
  const esbuild = createRequire(import.meta.url).resolve('esbuild/bin/esbuild');
  const argv = args.map((arg) => (arg.startsWith('--outfile=') ? `--outfile=${outfile}` : arg));
  execFileSync(esbuild, argv, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
}

/** Every TypeScript source file under `directory` (declaration files left out). */
export function listTypeScript(directory: string): string[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const path = join(directory, entry.name);
    if (entry.isDirectory()) return listTypeScript(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : [];
  });
}

function gitState(): { commit: string; srcDirty: boolean } {
  const git = (...args: string[]): string => {
    try {
      return execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return '';
    }
  };
  return {
    commit: git('rev-parse', '--short', 'HEAD') || 'unknown',
    srcDirty: git('status', '--porcelain', '--', 'src') !== '',
  };
}
