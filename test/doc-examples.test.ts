/**
 * Type-checks every `@example` in the doc comments of src/. Each public API promises a runnable
 * example; one that no longer compiles is one that no longer runs. All the examples go into one
 * TypeScript Program, in memory, with the compiler options of tsconfig.json: a few seconds for all.
 *
 * Each ```ts fence after an `@example` tag is a module of its own, in a directory of its own
 * beside its source file (a directory that exists only in the Program), where:
 * - `async-process-scheduler` and `async-process-scheduler/child` are src/index.ts and
 *   src/child/index.ts (the package maps them to dist/, which may be stale or missing);
 * - a line comment that names a file and gives its code, `// work.ts: export function ...` (or
 *   `// calc.js, beside this file: ...`), puts that file beside the example: the task module the
 *   example names with `new URL('./work.js', import.meta.url)`, or types with
 *   `typeof import('./work.js')`. It is checked too (a `.js` one for its syntax only);
 * - any other relative import is resolved from the source file itself: the examples of internal
 *   helpers import `./controller.js`, as code beside them would.
 *
 * The examples are run by no test: they start processes, print, and wait on purpose.
 */
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = fileURLToPath(new URL('..', import.meta.url));

/** What the package's exports point to, here in the sources. */
const ENTRIES: Readonly<Record<string, string>> = {
  'async-process-scheduler': join(root, 'src/index.ts'),
  'async-process-scheduler/child': join(root, 'src/child/index.ts'),
};

/** `// work.ts: <code>` or `// calc.js, beside this file: <code>`: a one-line file of the example. */
const FILE_COMMENT = /^(\s*\/\/ )([\w.-]+\.(?:ts|mts|cts|js|mjs|cjs))(?:,[^:]*)?: /;

/** One file of an example, kept in memory. */
interface ExampleFile {
  path: string;
  text: string;
  /** Where each line of `text` is in the source file: 1-based line, 0-based column. */
  origin: { line: number; column: number }[];
}

interface DocExample {
  /** The file whose doc comment holds the example. */
  source: string;
  /** The documented declaration: `schedule$`, `Scheduler.add`. */
  symbol: string;
  /** The line of the opening fence. */
  line: number;
  /** The example itself first, then the files it declares. */
  files: ExampleFile[];
}

/** The name of a documented declaration, with its class's: `WorkerPool.warm`. */
function symbolName(node: ts.Node, file: ts.SourceFile): string {
  const nameOf = (n: ts.Node): string => {
    if (ts.isConstructorDeclaration(n)) return 'constructor';
    if (ts.isVariableStatement(n)) return n.declarationList.declarations.map((d) => d.name.getText(file)).join(', ');
    return (n as ts.NamedDeclaration).name?.getText(file) ?? ts.SyntaxKind[n.kind];
  };
  const owner = node.parent;
  const inType = owner && (ts.isClassLike(owner) || ts.isInterfaceDeclaration(owner)) && owner.name;
  return inType ? `${owner.name.text}.${nameOf(node)}` : nameOf(node);
}

/** Every ```ts fence after an `@example` tag in the doc comments of one source file. */
function extractExamples(source: string, text: string): DocExample[] {
  const file = ts.createSourceFile(source, text, ts.ScriptTarget.Latest, true);
  const examples: DocExample[] = [];
  const visit = (node: ts.Node): void => {
    for (const doc of ts.getJSDocCommentsAndTags(node)) {
      // A declaration also sees its parent's comment (a variable, its statement's): take each once.
      if (ts.isJSDoc(doc) && doc.parent === node) examples.push(...examplesIn(file, doc, symbolName(node, file)));
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  return examples;
}

function examplesIn(file: ts.SourceFile, doc: ts.JSDoc, symbol: string): DocExample[] {
  const first = file.getLineAndCharacterOfPosition(doc.pos).line + 1;
  const lines = file.text.slice(doc.pos, doc.end).split('\n');
  const examples: DocExample[] = [];
  let inExample = false;
  let fence: { line: number; body: { text: string; line: number; column: number }[] } | undefined;
  lines.forEach((raw, i) => {
    // ` * text`, `/** text` or ` *` : the decoration, then the line as written.
    const prefix = /^\s*(?:\/\*\*|\*(?!\/))? ?/.exec(raw)![0];
    const body = raw.slice(prefix.length);
    const line = first + i;
    if (fence) {
      if (/^```\s*$/.test(body)) {
        examples.push(exampleFrom(file.fileName, symbol, fence.line, fence.body));
        fence = undefined;
      } else {
        fence.body.push({ text: body, line, column: prefix.length });
      }
    } else if (/^@example\b/.test(body)) {
      inExample = true;
    } else if (/^@\w/.test(body)) {
      inExample = false;
    } else if (inExample && /^```ts\s*$/.test(body)) {
      fence = { line, body: [] };
    }
  });
  return examples;
}

function exampleFrom(source: string, symbol: string, line: number, body: { text: string; line: number; column: number }[]): DocExample {
  const dir = join(dirname(source), '__doc_examples__', `${basename(source, '.ts')}.${line}`);
  const files: ExampleFile[] = [
    { path: join(dir, 'example.ts'), text: body.map((l) => l.text).join('\n'), origin: body.map(({ line, column }) => ({ line, column })) },
  ];
  for (const l of body) {
    const declared = FILE_COMMENT.exec(l.text);
    if (!declared) continue;
    const text = l.text.slice(declared[0].length);
    files.push({ path: join(dir, declared[2]!), text, origin: [{ line: l.line, column: l.column + declared[0].length }] });
  }
  return { source, symbol, line, files };
}

/** The compiler options of tsconfig.json, plus what the examples' own files need. */
function projectOptions(): ts.CompilerOptions {
  const config = ts.readConfigFile(join(root, 'tsconfig.json'), ts.sys.readFile);
  const { options, errors } = ts.convertCompilerOptionsFromJson(config.config?.compilerOptions, root);
  const problems = config.error ? [config.error, ...errors] : errors;
  if (problems.length) throw new Error(`tsconfig.json: ${problems.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n')).join('; ')}`);
  // allowJs: a task module given as `// work.js: ...` is compiled (checked for its syntax) too.
  return { ...options, allowJs: true, noEmit: true };
}

/**
 * Compiles the examples in one Program; returns, for each, its diagnostics as
 * `src/file.ts:line:column (symbol): TS1234: message`, at their place in the source file.
 */
function checkExamples(examples: readonly DocExample[]): { byExample: Map<DocExample, string[]>; global: string[] } {
  const options = projectOptions();
  const files = new Map<string, { example: DocExample; file: ExampleFile }>();
  for (const example of examples) for (const file of example.files) files.set(file.path, { example, file });

  const host = ts.createCompilerHost(options, true);
  const real = { fileExists: host.fileExists, readFile: host.readFile, getSourceFile: host.getSourceFile };
  host.getCurrentDirectory = () => root;
  const dirs = new Set([...files.keys()].map((path) => dirname(path)));
  host.fileExists = (path) => files.has(path) || real.fileExists.call(host, path);
  // Module resolution looks for a file only in a directory that exists.
  host.directoryExists = (path) => dirs.has(path) || ts.sys.directoryExists(path);
  host.readFile = (path) => files.get(path)?.file.text ?? real.readFile.call(host, path);
  host.getSourceFile = (path, languageVersion, ...rest) => {
    const virtual = files.get(path);
    return virtual ? ts.createSourceFile(path, virtual.file.text, languageVersion) : real.getSourceFile.call(host, path, languageVersion, ...rest);
  };
  const cache = ts.createModuleResolutionCache(root, host.getCanonicalFileName, options);
  host.resolveModuleNameLiterals = (literals, containingFile, redirected, compilerOptions, containingSourceFile) =>
    literals.map((literal) => {
      const entry = ENTRIES[literal.text];
      if (entry) return { resolvedModule: { resolvedFileName: entry, extension: ts.Extension.Ts, isExternalLibraryImport: false } };
      const mode = ts.getModeForUsageLocation(containingSourceFile, literal, compilerOptions);
      const resolve = (from: string) => ts.resolveModuleName(literal.text, from, compilerOptions, host, cache, redirected, mode);
      const found = resolve(containingFile);
      const example = files.get(containingFile)?.example;
      return !found.resolvedModule && example && literal.text.startsWith('.') ? resolve(example.source) : found;
    });

  const program = ts.createProgram({ rootNames: [...files.keys()], options, host });
  const byExample = new Map<DocExample, string[]>(examples.map((example) => [example, []]));
  for (const [path, { example, file }] of files) {
    const sourceFile = program.getSourceFile(path)!;
    for (const d of [...program.getSyntacticDiagnostics(sourceFile), ...program.getSemanticDiagnostics(sourceFile)]) {
      const { line, character } = sourceFile.getLineAndCharacterOfPosition(d.start ?? 0);
      const at = file.origin[line]!;
      byExample.get(example)!.push(
        `${relative(root, example.source)}:${at.line}:${at.column + character + 1} (${example.symbol}): ` +
          `TS${d.code}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`,
      );
    }
  }
  const global = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()].map(
    (d) => `TS${d.code}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`,
  );
  return { byExample, global };
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => join(entry.parentPath, entry.name))
    .sort();
}

/** Wrong on purpose, in the ways a real example could go wrong: the check must name each. */
const PROBE_SOURCE = join(root, 'src', 'doc-example-probe.ts');
const PROBE = `/**
 * Examples that do not compile. A block before the first tag is prose, not an example:
 *
 * \`\`\`ts
 * const prose: number = 'not checked';
 * \`\`\`
 *
 * @example
 * \`\`\`ts
 * import { schedule$ } from 'async-process-scheduler';
 * const count: number = schedule$([]);
 * \`\`\`
 * @example
 * \`\`\`ts
 * // work.ts: export function half(x: number) { return x / 2; }
 * import { taskModule } from 'async-process-scheduler';
 * const work = taskModule<typeof import('./work.js')>(new URL('./work.js', import.meta.url));
 * work.half('1');
 * work.double(1);
 * \`\`\`
 * @param value A tag that ends the example before it.
 * @example
 * \`\`\`ts
 * // calc.js, beside this file: process.send(
 * import { reportProgress } from 'async-process-scheduler/child';
 * type Missing = typeof import('./missing.js');
 * reportProgress(1);
 * \`\`\`
 */
export function probe(value: number): void {}
`;

const sources = sourceFiles(join(root, 'src'));
const examples = sources.flatMap((source) => extractExamples(source, readFileSync(source, 'utf8')));
const probes = extractExamples(PROBE_SOURCE, PROBE);
const started = performance.now();
const { byExample, global } = checkExamples([...examples, ...probes]);
const elapsedMs = performance.now() - started;

test('every @example of src/ is found: one per tag, more than 40 in all', (t) => {
  t.true(examples.length > 40, `only ${examples.length} examples found`);
  for (const source of sources) {
    const tags = readFileSync(source, 'utf8').match(/^\s*\* @example\b/gm)?.length ?? 0;
    const found = examples.filter((example) => example.source === source).length;
    t.is(found, tags, `${relative(root, source)}: ${tags} @example tags, ${found} \`\`\`ts blocks found under them`);
  }
});

test('the examples compile as one Program, in seconds', (t) => {
  t.deepEqual(global, []);
  t.log(`${examples.length} examples in ${Math.round(elapsedMs)} ms`);
  t.true(elapsedMs < 30_000, `${Math.round(elapsedMs)} ms`);
});

test('a broken example fails, naming its file, line, symbol and diagnostic', (t) => {
  const found = probes.map((probe) => byExample.get(probe)!.map((d) => /^(\S+) \(([^)]+)\): (TS\d+)/.exec(d)!.slice(1).join(' ')));
  t.deepEqual(found, [
    ['src/doc-example-probe.ts:11:10 probe TS2322'], // ScheduledRun is not a number
    ['src/doc-example-probe.ts:18:14 probe TS2345', 'src/doc-example-probe.ts:19:9 probe TS2339'], // argument types, export names
    ['src/doc-example-probe.ts:26:33 probe TS2307', 'src/doc-example-probe.ts:24:47 probe TS1005'], // a missing module; a declared one's syntax
  ]);
  t.regex(byExample.get(probes[0]!)!.join('\n'), /TS2322: Type 'ScheduledRun<.*' is not assignable to type 'number'/);
});

for (const example of examples) {
  test(`${relative(root, example.source)}:${example.line} ${example.symbol}`, (t) => {
    const diagnostics = byExample.get(example)!;
    const hint = diagnostics.some((d) => d.includes('TS2307'))
      ? "\n(a task module the example names is declared on a line of its own: // work.ts: export function ...)"
      : '';
    t.is(diagnostics.length, 0, `the @example does not compile:\n${diagnostics.join('\n')}${hint}`);
  });
}
