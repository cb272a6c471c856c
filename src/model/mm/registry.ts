/**
 * The memory-type registry: validates each descriptor once, then answers
 * "which type provides X". The core asks by provision, never by name.
 */
import {
  _UFFDIO_CONTINUE,
  _UFFDIO_COPY,
  _UFFDIO_WAKE,
  _UFFDIO_ZEROPAGE,
  UFFD_API_RANGE_IOCTLS,
} from '../../uapi/constants.ts';
import type { LentServices } from './hook-services.ts';
import type { MemoryType, MemoryTypeModule, Provision } from './memtype.ts';

const PROVISIONS: readonly Provision[] = ['anonymous', 'memfd', 'memfd-hugetlb'];
const bit = (nr: number) => 1n << BigInt(nr);

export class MemoryTypeError extends Error {
  override name = 'MemoryTypeError';
}

export class MemoryTypeRegistry {
  private readonly types: MemoryType[] = [];
  private readonly byProvision = new Map<Provision, MemoryType>();

  /** `lend` makes the services one type's factory receives (see mm/hook-services.ts). */
  constructor(private readonly lend: () => LentServices) {}

  register(module: MemoryTypeModule): MemoryType {
    const lent = this.lend();
    const type = module.create(lent.services);
    validateMemoryType(type, module.name);
    lent.bind(type);
    if (this.types.some((existing) => existing.name === type.name)) {
      throw new MemoryTypeError(`memory type '${type.name}': name: already registered`);
    }
    // A later type providing the same object replaces the earlier one, so a
    // test or an outside module can stand in for a built-in type.
    for (const provision of type.provides) this.byProvision.set(provision, type);
    this.types.push(type);
    return type;
  }

  provider(provision: Provision): MemoryType | undefined {
    return this.byProvision.get(provision);
  }

  all(): readonly MemoryType[] {
    return this.types;
  }

  byName(name: string): MemoryType | undefined {
    return this.types.find((type) => type.name === name);
  }
}

/** Checks a descriptor's fields; the message names the type and the field. */
export function validateMemoryType(type: MemoryType, moduleName: string): void {
  const fail = (field: string, problem: string): never => {
    throw new MemoryTypeError(`memory type '${type?.name ?? moduleName}': ${field}: ${problem}`);
  };
  if (typeof type !== 'object' || type === null) fail('create()', 'did not return a descriptor object');
  if (typeof type.name !== 'string' || !/^[a-z][a-z0-9_-]*$/.test(type.name)) {
    fail('name', 'must be a lower-case identifier');
  }
  if (!Array.isArray(type.provides)) fail('provides', 'must be an array');
  for (const provision of type.provides) {
    if (!PROVISIONS.includes(provision)) fail('provides', `unknown provision '${provision}'`);
  }
  if (typeof type.rangeIoctls !== 'bigint') fail('rangeIoctls', 'must be a bigint bit mask');
  if ((type.rangeIoctls & ~UFFD_API_RANGE_IOCTLS) !== 0n) {
    fail('rangeIoctls', `has bits outside UFFD_API_RANGE_IOCTLS (0x${type.rangeIoctls.toString(16)})`);
  }
  if (type.conformanceFile !== undefined && typeof type.conformanceFile !== 'function') {
    fail('conformanceFile', 'must be a function when present');
  }
  const ops = type.uffdOps;
  const fileBacked = !type.provides.includes('anonymous');
  if (fileBacked && type.inodePageShift === undefined)
    fail('inodePageShift', 'required for a file-backed type');
  if (fileBacked && type.fault === undefined) fail('fault', 'required for a file-backed type');
  if (ops === null) {
    if (type.rangeIoctls !== 0n) fail('rangeIoctls', 'declared without uffdOps');
    return;
  }
  if (typeof ops.canUserfault !== 'function') fail('uffdOps.canUserfault', 'required');
  if (type.rangeIoctls !== 0n && (type.rangeIoctls & bit(_UFFDIO_WAKE)) === 0n) {
    fail('rangeIoctls', 'UFFDIO_WAKE is implied by every mode and must be declared');
  }
  const fills = bit(_UFFDIO_COPY) | bit(_UFFDIO_ZEROPAGE);
  if ((type.rangeIoctls & fills) !== 0n) {
    if (ops.allocFolio === undefined)
      fail('uffdOps.allocFolio', 'required when COPY or ZEROPAGE is declared');
    if (fileBacked && (ops.filemapAdd === undefined || ops.filemapRemove === undefined)) {
      fail('uffdOps.filemapAdd', 'filemapAdd and filemapRemove are required for COPY into a page cache');
    }
  }
  if ((type.rangeIoctls & bit(_UFFDIO_CONTINUE)) !== 0n && ops.getFolioNoalloc === undefined) {
    fail('uffdOps.getFolioNoalloc', 'required when CONTINUE is declared');
  }
  if (fileBacked && ops.getFolioNoalloc === undefined) {
    fail('uffdOps.getFolioNoalloc', 'required for a file-backed type with userfaultfd support');
  }
}
