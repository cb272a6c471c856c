/**
 * Hook containment: a memory type whose hook breaks its contract gets a
 * clear errno (or SIGBUS, or a refused registration), exactly one warning
 * naming the type and the hook, and the core's state stays as it was. One
 * test type per breakage (test/fixtures/memtypes/broken.ts), each a shmem
 * with one hook replaced.
 *
 * Every test maps one 4-page file shared:
 *
 *   area: | page 0 | page 1 | page 2 | page 3 |    file pages 0..3, 16 KiB
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { digestKernel } from '../src/model/check.ts';
import {
  UFFDIO_REGISTER_MODE_MINOR,
  UFFDIO_REGISTER_MODE_MISSING,
  UFFDIO_REGISTER_MODE_WP,
} from '../src/uapi/constants.ts';
import { EFAULT, EINVAL, ENOMEM, SignalError } from '../src/uapi/errno.ts';
import { brokenModule, type Defect } from './fixtures/memtypes/broken.ts';
import { createTestModel, expectErrno, filled, PAGE } from './helpers.ts';
import { cachedFolios } from './memkinds.ts';

function setup(defect: Defect, options: { otherFileFirst?: boolean } = {}) {
  const model = createTestModel({ extraMemoryTypes: [brokenModule(defect)] });
  const { backend, process } = model;
  // The 'noalloc-other-file' type looks in the first file it made: make that one another file.
  const other = options.otherFileFirst ? process.memfd('other', { size: 4 * PAGE }) : -1;
  if (other >= 0) process.pwrite(other, filled(PAGE, 0x0f), 0);
  const fd = process.memfd('file', { size: 4 * PAGE });
  const area = process.mmap({ length: 4 * PAGE, fd, shared: true });
  const uffd = process.userfaultfd();
  uffd.api();
  const kernel = backend.kernel;
  /** Runs `call` and checks it changed nothing the kernel holds. */
  const unchanged = <T>(call: () => T): T => {
    const before = digestKernel(kernel);
    const result = call();
    assert.equal(digestKernel(kernel), before, 'the failed call changed the kernel state');
    return result;
  };
  /** Exactly one warning so far, naming the type and the hook, with the problem matching `problem`. */
  const oneWarning = (hook: string, problem: RegExp) => {
    const warnings = kernel.hooks.warnings;
    assert.equal(warnings.length, 1, `expected one warning, got ${JSON.stringify(warnings)}`);
    const prefix = `faultline: memory type 'broken-${defect}' hook ${hook}: `;
    assert.ok(warnings[0]!.startsWith(prefix), `'${warnings[0]}' should start with '${prefix}'`);
    assert.match(warnings[0]!.slice(prefix.length), problem);
  };
  /** A source page for COPY, written before the state is recorded. */
  const source = (byte: number) => {
    const src = process.mmapIsolated(PAGE);
    process.write(src, filled(PAGE, byte));
    return src;
  };
  return { ...model, kernel, fd, area, uffd, unchanged, oneWarning, source };
}

/** CONTINUE of page 0 with pages 0 and 1 cached: the broken get_folio_noalloc answers. */
function continueFails(defect: Defect, problem: RegExp, options: { otherFileFirst?: boolean } = {}) {
  const t = setup(defect, options);
  t.process.pwrite(t.fd, filled(2 * PAGE, 0x5a), 0);
  t.uffd.register({ start: t.area, length: 4 * PAGE }, UFFDIO_REGISTER_MODE_MINOR);
  const error = t.unchanged(() =>
    expectErrno(() => t.uffd.continue({ start: t.area, length: PAGE }), EFAULT),
  );
  assert.equal(error.progress, -EFAULT);
  assert.match(error.message, /broken-/, 'the errno names the memory type');
  t.oneWarning('get_folio_noalloc (from UFFDIO_CONTINUE)', problem);
  t.check();
  // The page is still there for a correct lookup: the file kept its bytes.
  assert.deepEqual(t.process.pread(t.fd, 4, 0), filled(4, 0x5a));
  return t;
}

describe('get_folio_noalloc broken', () => {
  it('a folio of the wrong index: EFAULT, one warning, state intact', () => {
    continueFails('noalloc-wrong-index', /^returned folio \d+ at index 1, wanted 0$/);
  });

  it('an unlocked folio: EFAULT, one warning, state intact', () => {
    continueFails('noalloc-unlocked', /^returned folio \d+ unlocked$/);
  });

  it('a folio without the caller’s reference: EFAULT, one warning, state intact', () => {
    continueFails('noalloc-missing-reference', /^returned folio \d+ without a reference for the caller$/);
  });

  it('a folio with an extra reference: EFAULT, one warning, the extra reference dropped', () => {
    continueFails(
      'noalloc-extra-reference',
      /^returned folio \d+ with 2 new reference\(s\), wanted 1 for the caller$/,
    );
  });

  it('a folio of another file: EFAULT, one warning, state intact', () => {
    continueFails('noalloc-other-file', /^returned folio \d+ of another file \(inode \d+\)$/, {
      otherFileFirst: true,
    });
  });

  it('a throw: EFAULT, one warning naming what it threw', () => {
    continueFails('noalloc-throws', /^threw: get_folio_noalloc exploded$/);
  });

  it('allocating: EFAULT from CONTINUE, SIGBUS from the fault path, one warning each, nothing allocated', async () => {
    const t = setup('noalloc-allocates');
    t.uffd.register({ start: t.area, length: 4 * PAGE }, UFFDIO_REGISTER_MODE_MINOR);
    t.unchanged(() => expectErrno(() => t.uffd.continue({ start: t.area + 2 * PAGE, length: PAGE }), EFAULT));
    t.oneWarning('get_folio_noalloc (from UFFDIO_CONTINUE)', /^allocated a folio$/);
    assert.equal(cachedFolios(t.backend, t.process, t.fd), 0);
    t.check();
    // On the fault path the broken answer is a SIGBUS, not a MISSING fault and not a mapped page.
    t.uffd.register({ start: t.area, length: 4 * PAGE }, UFFDIO_REGISTER_MODE_MISSING);
    const before = digestKernel(t.kernel);
    const result = await t.process.thread([{ kind: 'read', address: t.area + 3 * PAGE, length: 1 }]).join();
    assert.equal(result.state, 'sigbus');
    assert.equal(digestKernel(t.kernel), before);
    assert.equal(t.kernel.hooks.warnings.length, 2);
    assert.equal(
      t.kernel.hooks.warnings[1],
      "faultline: memory type 'broken-noalloc-allocates' hook get_folio_noalloc (from fault): allocated a folio",
    );
    assert.equal(t.uffd.readMessages().length, 0, 'no fault message for a broken answer');
    t.check();
  });
});

describe('alloc_folio broken', () => {
  /** COPY of page 0 (page 1 cached), answered by a broken alloc_folio. */
  function copyFails(defect: Defect, problem: RegExp) {
    const t = setup(defect);
    t.process.pwrite(t.fd, filled(PAGE, 0x11), PAGE);
    t.uffd.register({ start: t.area, length: 4 * PAGE }, UFFDIO_REGISTER_MODE_MISSING);
    const src = t.source(0x22);
    const error = t.unchanged(() =>
      expectErrno(() => t.uffd.copy({ dst: t.area, src, length: PAGE }), EFAULT),
    );
    assert.equal(error.progress, -EFAULT);
    t.oneWarning('alloc_folio', problem);
    assert.equal(cachedFolios(t.backend, t.process, t.fd), 1);
    t.check();
  }

  it('a locked folio: EFAULT, one warning, the folio freed', () => {
    copyFails('alloc-locked', /^returned folio \d+ locked$/);
  });

  it('a folio it did not allocate (a cached one): EFAULT, one warning, the cache untouched', () => {
    copyFails('alloc-not-fresh', /^returned folio \d+, which it did not allocate$/);
  });

  it('a folio of the wrong size: EFAULT, one warning', () => {
    copyFails('alloc-wrong-order', /^returned folio \d+ of order 1, the VMA maps order 0$/);
  });

  it('a second folio kept: EFAULT, one warning, both freed', () => {
    copyFails('alloc-leaks', /^allocated folio \d+ and kept it$/);
  });

  it('a throw: EFAULT, one warning', () => {
    copyFails('alloc-throws', /^threw: alloc_folio exploded$/);
  });
});

describe('filemap_add broken', () => {
  function copyFails(defect: Defect, problem: RegExp) {
    const t = setup(defect);
    t.uffd.register({ start: t.area, length: 4 * PAGE }, UFFDIO_REGISTER_MODE_MISSING);
    const src = t.source(0x33);
    const error = t.unchanged(() =>
      expectErrno(() => t.uffd.copy({ dst: t.area, src, length: PAGE }), EFAULT),
    );
    assert.equal(error.progress, -EFAULT);
    t.oneWarning('filemap_add', problem);
    assert.equal(cachedFolios(t.backend, t.process, t.fd), 0, 'the page cache holds nothing');
    t.check();
  }

  it('failing after the folio was inserted: EFAULT, one warning, the folio out of the cache and freed', () => {
    copyFails('add-fails-late', /^returned ENOMEM but inserted folio \d+ into the page cache of memfd:file$/);
  });

  it('inserting at the wrong index: EFAULT, one warning', () => {
    copyFails('add-wrong-index', /^added folio \d+ at index 1, wanted 0$/);
  });

  it('returning 0 without inserting: EFAULT, one warning', () => {
    copyFails('add-not-added', /^returned 0 without adding folio \d+ to the page cache$/);
  });

  it('a throw: EFAULT, one warning', () => {
    copyFails('add-throws', /^threw: filemap_add exploded$/);
  });

  it('a clean failure is no violation: its errno passes through, no warning, the core drops its folio', () => {
    const t = setup('add-fails');
    t.uffd.register({ start: t.area, length: 4 * PAGE }, UFFDIO_REGISTER_MODE_MISSING);
    const src = t.source(0x44);
    const error = t.unchanged(() =>
      expectErrno(() => t.uffd.copy({ dst: t.area, src, length: PAGE }), ENOMEM),
    );
    assert.equal(error.progress, -ENOMEM);
    assert.deepEqual(t.kernel.hooks.warnings, []);
    t.check();
  });
});

describe('can_userfault and the ordinary fault broken', () => {
  it('can_userfault throwing: the registration is refused with EINVAL, one warning, the VMAs unchanged', () => {
    const t = setup('can-userfault-throws');
    for (const mode of [UFFDIO_REGISTER_MODE_MISSING, UFFDIO_REGISTER_MODE_WP]) {
      t.unchanged(() =>
        expectErrno(() => t.uffd.register({ start: t.area, length: 4 * PAGE }, mode), EINVAL),
      );
    }
    // The same problem twice is warned about once.
    t.oneWarning('can_userfault', /^threw: can_userfault exploded$/);
    t.check();
  });

  it('a fault answered with an extra reference: SIGBUS, one warning, the page not mapped', () => {
    const t = setup('fault-extra-reference');
    const error = t.unchanged(() => {
      try {
        t.process.read(t.area, 1);
      } catch (thrown) {
        return thrown;
      }
      return undefined;
    });
    assert.ok(error instanceof SignalError && error.signalName === 'SIGBUS', String(error));
    t.oneWarning(
      'fault',
      /^returned folio \d+ with 3 new reference\(s\), wanted 2 for the caller and the cache$/,
    );
    assert.equal(cachedFolios(t.backend, t.process, t.fd), 0, 'the folio the fault inserted is gone again');
    t.check();
  });
});
