// The public API's reference (TypeDoc, issue 17): every exported function and public method of the
// process API and the uapi that can throw says what with @throws — the errnos for kernel calls.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const FILES = [
  'src/api/process.ts',
  'src/api/model-backend.ts',
  'src/uapi/structs.ts',
  'src/uapi/constants.ts',
  'src/uapi/errno.ts',
];

/** A body that throws itself, or calls into a backend or an ioctl (a kernel call that can fail). */
function mayThrow(body: ts.Node | undefined): boolean {
  if (body === undefined) return false;
  const text = body.getText();
  return /\bthrow\b|this\.backend\.|this\.ioctl\(|this\.rangeIoctl\(|this\.process\.(?!pid)/.test(text);
}

function undocumented(file: string): string[] {
  const path = fileURLToPath(new URL(`../${file}`, import.meta.url));
  const source = ts.createSourceFile(path, readFileSync(path, 'utf8'), ts.ScriptTarget.Latest, true);
  const missing: string[] = [];
  const check = (name: string, node: ts.FunctionLikeDeclaration) => {
    if (!mayThrow(node.body)) return;
    if (!ts.getJSDocTags(node).some((tag) => tag.tagName.text === 'throws')) missing.push(`${file}: ${name}`);
  };
  const exported = (node: ts.Declaration) =>
    (ts.getCombinedModifierFlags(node) & ts.ModifierFlags.Export) !== 0;
  source.forEachChild((node) => {
    if (ts.isFunctionDeclaration(node) && node.name !== undefined && exported(node))
      check(node.name.text, node);
    if (!ts.isClassDeclaration(node) || node.name === undefined || !exported(node)) return;
    for (const member of node.members) {
      if (!ts.isMethodDeclaration(member) && !ts.isConstructorDeclaration(member)) continue;
      const flags = ts.getCombinedModifierFlags(member);
      if ((flags & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) !== 0) continue;
      const name = ts.isConstructorDeclaration(member) ? 'constructor' : member.name.getText(source);
      check(`${node.name.text}.${name}`, member);
    }
  });
  return missing;
}

describe('@throws in the API reference', () => {
  it('every public function of src/api and src/uapi that can throw documents it', () => {
    assert.deepEqual(FILES.flatMap(undocumented), []);
  });
});
